"""Networks, chosen by `config.model.name`."""

from jaxdiff.models.unet import UNet, parameter_count, paper_parameter_count

__all__ = ['UNet', 'build_network', 'parameter_count', 'paper_parameter_count']


def build_network(model_cfg, *, image_size: int, channels: int, rngs):
  """The network named by `model_cfg.name`, built for images [image_size, image_size, channels]."""
  if model_cfg.name == 'unet':
    return UNet(
        image_size=image_size, channels=channels, width=model_cfg.width,
        channel_mult=tuple(model_cfg.channel_mult), num_res_blocks=model_cfg.num_res_blocks,
        attention_resolutions=tuple(model_cfg.attention_resolutions), num_heads=model_cfg.num_heads,
        dropout=model_cfg.dropout, groups=model_cfg.groups, num_classes=model_cfg.num_classes,
        kernels=model_cfg.kernels, time_activation=model_cfg.time_activation, freq_shift=model_cfg.freq_shift,
        downsample_padding=model_cfg.downsample_padding, norm_eps=model_cfg.norm_eps, init=model_cfg.init,
        emb_dim=model_cfg.emb_dim, scale_shift=model_cfg.scale_shift, resample=model_cfg.resample,
        head_dim=model_cfg.head_dim, norm_bias=model_cfg.norm_bias, attention_gate=model_cfg.attention_gate,
        learned_null=model_cfg.learned_null, rngs=rngs)
  raise ValueError(f"config field 'model.name': unknown network {model_cfg.name!r}")
