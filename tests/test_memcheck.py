"""jaxdiff.memcheck: the memorization check on anyone's images finds planted copies with the exact decisions of a
float64 brute force, measures the chance level on held-out images, and names the path of bad input."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_python
from jaxdiff import memcheck


def _brute_ratio(samples, train):
  x = samples.reshape(len(samples), -1).astype(np.float64)
  y = train.reshape(len(train), -1).astype(np.float64)
  d = np.sort(np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)), axis=1)
  return np.where(d[:, 1] > 0, d[:, 0] / np.where(d[:, 1] > 0, d[:, 1], 1), 0.0), np.argmin(
      ((x[:, None] - y[None]) ** 2).sum(-1), axis=1)


def _write_pngs(folder, images):
  os.makedirs(folder, exist_ok=True)
  for i, img in enumerate(images):
    Image.fromarray(img).save(os.path.join(folder, f'{i:04d}.png'))
  return str(folder)


@pytest.fixture
def planted(tmp_path):
  """PNG folders of raw 0-255 grayscale digits-like images: 40 training images; samples = 10 exact copies,
  10 noisy copies, 20 fresh images; 30 held-out real images."""
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (40, 12, 12), dtype=np.uint8)
  idx = rng.integers(0, 40, 20)
  noisy = np.clip(train[idx[10:]].astype(int) + rng.integers(-20, 21, (10, 12, 12)), 0, 255).astype(np.uint8)
  samples = np.concatenate([train[idx[:10]], noisy, rng.integers(0, 256, (20, 12, 12), dtype=np.uint8)])
  test = rng.integers(0, 256, (30, 12, 12), dtype=np.uint8)
  return {'train': train, 'samples': samples, 'test': test, 'idx': idx,
          'dirs': {k: _write_pngs(tmp_path / k, v) for k, v in (('train', train), ('samples', samples),
                                                                 ('test', test))}}


def test_planted_copies_in_png_folders_give_the_brute_force_f_mem(planted, tmp_path):
  d = planted['dirs']
  out = str(tmp_path / 'out')
  report = memcheck.run(d['samples'], d['train'], out, d['test'], num_resamples=200, block_size=16)
  ratio, nearest = _brute_ratio(planted['samples'].astype(np.float64), planted['train'].astype(np.float64))
  assert report['f_mem'] == pytest.approx(np.mean(ratio < 1 / 3))
  assert report['f_mem_lo'] <= report['f_mem'] <= report['f_mem_hi']
  for k in (0.25, 0.5):
    assert report['fractions'][f'f_mem_k{k:.3g}'] == pytest.approx(np.mean(ratio < k))
  np.testing.assert_array_equal(report['samples']['index'], nearest)
  np.testing.assert_array_equal(report['samples']['index'][:10], planted['idx'][:10])   # the exact copies
  assert np.all(report['samples']['ratio'][:10] == 0.0) and report['num_uncertified'] >= 0
  test_ratio, _ = _brute_ratio(planted['test'].astype(np.float64), planted['train'].astype(np.float64))
  assert report['chance']['f_mem'] == pytest.approx(np.mean(test_ratio < 1 / 3))
  saved = json.load(open(os.path.join(out, 'report.json')))
  assert saved['f_mem'] == report['f_mem'] and len(saved['samples']['ratio']) == 40
  assert saved['chance']['num_test'] == 30 and saved['image_shape'] == [12, 12, 1]
  for name in ('neighbours.png', 'ratios.png'):
    with Image.open(os.path.join(out, name)) as im:
      assert im.size[0] > 200 and len(set(np.asarray(im.convert('L')).ravel().tolist())) > 2


def test_arrays_and_mixed_colour_inputs(planted, tmp_path):
  """An .npz of samples against a PNG folder: same decisions; a colour sample set makes everything colour."""
  npz = str(tmp_path / 'samples.npz')
  np.savez(npz, images=planted['samples'])
  report = memcheck.run(npz, planted['dirs']['train'], str(tmp_path / 'a'), num_resamples=100)
  ratio, _ = _brute_ratio(planted['samples'].astype(np.float64), planted['train'].astype(np.float64))
  assert report['f_mem'] == pytest.approx(np.mean(ratio < 1 / 3))
  rgb = np.repeat(planted['samples'][..., None], 3, axis=-1)
  np.save(str(tmp_path / 'rgb.npy'), rgb)
  x, y, _ = memcheck.load_sets(str(tmp_path / 'rgb.npy'), planted['dirs']['train'])
  assert x.shape == (40, 12, 12, 3) and y.shape == (40, 12, 12, 3)
  np.testing.assert_array_equal(y[..., 0], y[..., 2])   # grayscale training images repeated over channels


def test_bad_input_names_the_path(planted, tmp_path):
  d = planted['dirs']
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(memcheck.InputError, match=f'{empty}: no .* images'):
    memcheck.load_sets(str(empty), d['train'])
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'a.png').write_bytes(b'not a png')
  with pytest.raises(memcheck.InputError, match=f'{broken / "a.png"}: not a readable image'):
    memcheck.load_sets(str(broken), d['train'])
  mixed = _write_pngs(tmp_path / 'mixed', [np.zeros((12, 12), np.uint8), np.zeros((16, 16), np.uint8)])
  with pytest.raises(memcheck.InputError, match=f'{mixed}: images of different sizes.*--image_size'):
    memcheck.load_sets(mixed, d['train'])
  x, y, _ = memcheck.load_sets(mixed, d['train'], image_size=8)
  assert x.shape == (2, 8, 8, 1) and y.shape == (40, 8, 8, 1)
  one = _write_pngs(tmp_path / 'one', planted['train'][:1])
  with pytest.raises(memcheck.InputError, match=f'{one}: the ratio test needs at least 2 training images'):
    memcheck.load_sets(d['samples'], one)
  with pytest.raises(memcheck.InputError, match='nowhere.npy: no such file'):
    memcheck.load_sets(str(tmp_path / 'nowhere.npy'), d['train'])
  bigger = _write_pngs(tmp_path / 'bigger', np.zeros((3, 16, 16), np.uint8))
  with pytest.raises(memcheck.InputError, match=f'{bigger}: images of shape .* but the training images'):
    memcheck.load_sets(bigger, d['train'])


def test_command_line_writes_the_report_and_fails_clearly(planted, tmp_path):
  d = planted['dirs']
  out = str(tmp_path / 'cli')
  ok = run_python(f"import sys; from absl import app; from jaxdiff import memcheck; sys.argv = ['memcheck', "
                  f"'--samples={d['samples']}', '--train={d['train']}', '--out={out}', '--bootstrap_resamples=100']; "
                  f"memcheck.flags.mark_flags_as_required(['samples', 'train', 'out']); app.run(memcheck.main)")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert json.load(open(os.path.join(out, 'report.json')))['num_samples'] == 40
  bad = run_python(f"import sys; from absl import app; from jaxdiff import memcheck; sys.argv = ['memcheck', "
                   f"'--samples={tmp_path}/missing', '--train={d['train']}', '--out={out}']; app.run(memcheck.main)")
  assert bad.returncode != 0 and f'{tmp_path}/missing: no such file or folder' in bad.stderr


def test_feature_copy_score_finds_planted_copies_and_reports_its_features(planted, tmp_path):
  """--features=pixels: the pixel-cosine copy score of [0, 1]-mapped images equals a float64 brute force, the
  exact copies score 1, and the report and copies.png say which features were used."""
  d = planted['dirs']
  out = str(tmp_path / 'feat')
  report = memcheck.run(d['samples'], d['train'], out, d['test'], num_resamples=100, features='pixels',
                        copy_threshold=0.9)
  c = report['copy']
  assert c['features'] == 'pixels' and c['threshold'] == 0.9 and c['pixel_range'] == [0.0, 255.0]
  x = planted['samples'].reshape(40, -1) / 255.0
  y = planted['train'].reshape(40, -1) / 255.0
  s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
  np.testing.assert_array_equal(c['samples']['index'], s.argmax(1))
  np.testing.assert_allclose(c['samples']['similarity'], s.max(1), atol=1e-5)
  assert c['score'] == pytest.approx(np.mean(s.max(1) > 0.9))
  np.testing.assert_allclose(c['samples']['similarity'][:10], 1.0, atol=1e-5)
  t = planted['test'].reshape(30, -1) / 255.0
  st = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
  assert c['chance']['score'] == pytest.approx(np.mean(st.max(1) > 0.9))
  saved = json.load(open(os.path.join(out, 'report.json')))
  assert saved['copy']['features'] == 'pixels' and os.path.exists(os.path.join(out, 'copies.png'))


def test_feature_option_names_bad_input(planted, tmp_path):
  d = planted['dirs']
  with pytest.raises(memcheck.InputError, match='--features must be one of'):
    memcheck.run(d['samples'], d['train'], str(tmp_path / 'x'), features='sscd_typo')
  with pytest.raises(memcheck.InputError, match='no_such.pth'):
    memcheck.run(d['samples'], d['train'], str(tmp_path / 'x'), features='inception',
                 features_weights=str(tmp_path / 'no_such.pth'))



def test_sscd_copy_score_runs_end_to_end_and_names_its_weights(tmp_path, monkeypatch):
  """--features=sscd --features_weights=FILE (random weights, tiny images): every sample's best match is that of
  the SSCD descriptors of the [0, 1]-mapped images, exact copies score 1 against their source, and report.json
  names the features and the weight file. A weight file of another network is refused naming the flag."""
  from jaxdiff.metrics import sscd  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sscd, 'INPUT_SIZE', 16)   # ResNet-50 at 288 is slow on a CPU; the pipeline is the same
  weights = str(tmp_path / 'sscd_random.npz')
  np.savez(weights, **sscd.random_state_dict(0))
  rng = np.random.default_rng(4)
  train = rng.integers(0, 256, (6, 12, 12)).astype(np.float32)
  samples = np.concatenate([train[[3, 1]], rng.integers(0, 256, (2, 12, 12)).astype(np.float32)])
  np.save(tmp_path / 'train.npy', train)
  np.save(tmp_path / 'samples.npy', samples)
  out = str(tmp_path / 'sscd')
  report = memcheck.run(str(tmp_path / 'samples.npy'), str(tmp_path / 'train.npy'), out, num_resamples=100,
                        features='sscd', features_weights=weights)
  c = report['copy']
  assert c['features'] == 'sscd' and c['features_weights'] == weights and c['threshold'] == 0.6
  embed = sscd.make_sscd_features(weights, size=16)
  f = np.asarray(embed(np.concatenate([samples, train])[..., None] / 255.0), np.float64)
  s = f[:4] @ f[4:].T
  np.testing.assert_array_equal(c['samples']['index'], s.argmax(1))
  np.testing.assert_allclose(c['samples']['similarity'], s.max(1), atol=1e-5)
  assert list(c['samples']['index'][:2]) == [3, 1]
  np.testing.assert_allclose(c['samples']['similarity'][:2], 1.0, atol=1e-5)
  assert c['score'] == pytest.approx(np.mean(s.max(1) > 0.6))
  saved = json.load(open(os.path.join(out, 'report.json')))
  assert saved['copy']['features'] == 'sscd' and saved['copy']['features_weights'] == weights
  inception_like = str(tmp_path / 'other.npz')
  np.savez(inception_like, **{'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3), np.float32)})
  with pytest.raises(memcheck.InputError, match='--features_weights=.*other.npz.*unexpected tensor'):
    memcheck.run(str(tmp_path / 'samples.npy'), str(tmp_path / 'train.npy'), str(tmp_path / 'x'), features='sscd',
                 features_weights=inception_like)
