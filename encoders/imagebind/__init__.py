"""ImageBind, anymodal's own implementation: six modalities in one embedding space, loading the official
``imagebind_huge.pth`` unchanged. Switching from the reference repo is one import line::

    from encoders.imagebind import ImageBindModel, imagebind_huge, ModalityType, load_and_transform_text

``ImageBindEncoder`` is the anymodal ``Encoder`` on top (entry point ``imagebind``).
"""

from .checkpoint import CHECKPOINT_URL, DEFAULT_CHECKPOINT, imagebind_huge, load_imagebind, save_checkpoint
from .data import (load_and_transform_audio_data, load_and_transform_depth_data, load_and_transform_imu_data,
                   load_and_transform_text, load_and_transform_thermal_data, load_and_transform_video_data,
                   load_and_transform_vision_data, read_depth_map, read_imu_csv, read_thermal_image)
from .encoder import ImageBindEncoder
from .model import HUGE, TINY, ImageBindModel, ModalityType

__all__ = [
    "CHECKPOINT_URL", "DEFAULT_CHECKPOINT", "HUGE", "ImageBindEncoder", "ImageBindModel", "ModalityType",
    "imagebind_huge", "load_and_transform_audio_data", "load_and_transform_depth_data", "load_and_transform_imu_data",
    "load_and_transform_text", "load_and_transform_thermal_data", "load_and_transform_video_data",
    "load_and_transform_vision_data", "load_imagebind", "read_depth_map", "read_imu_csv", "read_thermal_image",
    "save_checkpoint", "TINY",
]
