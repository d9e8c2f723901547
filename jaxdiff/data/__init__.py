"""Data sets: images prepared by the protocol of paper 1 (see `jaxdiff.data.images`); sequences of the Random
Hierarchy Model of paper 2 in `jaxdiff.data.rhm`."""

from jaxdiff.data.images import (DATASETS, DataNotPreparedError, ImageData, center_crop_square, load_images,
                                 preprocess, resize_weights, tfds_images)

__all__ = ['DATASETS', 'DataNotPreparedError', 'ImageData', 'center_crop_square', 'load_images', 'preprocess',
           'resize_weights', 'tfds_images']
