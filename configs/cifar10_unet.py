"""CIFAR-10 in colour with the DDPM U-Net (the image setting of papers 2 and 3, SPEC sections 4-5).

    python -m jaxdiff.main --config=configs/cifar10_unet.py --workdir=workdirs/cifar_n2048 \
        --config.data.n=2048

First n training images (n in {2048, 4096, 8192, 16384} in paper 3), 32x32x3, 5120 test images, Adam 1e-4,
batch 128, 3 ResNet blocks per level, class-conditional (10 classes, plus the null class for guidance).
Paper 3 uses rectified flow and EMA 0.9999; this config keeps DDPM (the family jaxdiff has today) with the
same network and data protocol. Cost: GPU/TPU work, not yet measured at this size (bench/README.md has the
step times of paper 1's U-Net). Needs CIFAR-10 prepared for TFDS in array_record format (see README, "Data").
"""

from jaxdiff.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'cifar10'
  c.data.n = 2048
  c.data.n_test = 5120
  c.data.image_size = 32
  c.data.grayscale = False
  c.model.width = 32
  c.model.num_res_blocks = 3
  c.model.num_classes = 10
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-4
  c.train.batch_size = 128
  c.train.num_steps = 1_000_000
  c.train.steps_per_dispatch = 100
  c.train.log_every = 1000
  c.train.checkpoint_every = 20_000
  c.diffusion.sample_steps = 100
  return c
