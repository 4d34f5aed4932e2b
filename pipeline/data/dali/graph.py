"""The DALI graph: one pipeline per loader and run, fed by the plan (feed.py), drawing no random numbers.

Decode: `mixed` (nvJPEG; a share `data.hw_decoder_load` of the JPEGs to the hardware decoder) when the
training device is CUDA, else `cpu` (libjpeg-turbo) with `device_id=None`. EXIF orientation is not
applied (`adjust_orientation=False`), as PIL (the torchvision loader, timm) does not: the windows are
drawn on the stored image, whose size the sample table read from the header.

Train, one view: `fn.decoders.image_slice` decodes only the window (ROI decode), then `fn.resize` to
image_size x image_size. Two views: `fn.decoders.image` decodes the whole image once and each view is
`fn.resize` of its window (the resize's ROI: no copy of the crop), since one ROI decode cannot serve two
windows and decoding twice would double the dominant cost. RandAugment, when on, then applies the view's
replayed operations to the uint8 crop (rand_augment.py; the graph is built with DALI's conditional
execution for it). Then each view's flip and normalisation
(`fn.crop_mirror_normalize`, mean/std scaled to 0..255) to float32. Val: resize the shorter side to
val_resize (the long side is rounded where torchvision truncates: a sub-pixel difference on non-square
images), centre crop image_size.

nvJPEG memory: the train decoder preallocates, per thread, buffers for ImageNet's largest image
(device_memory_padding, host_memory_padding, and the hardware decoder's preallocate_*_hint), so no
train batch ever waits on a reallocation. The val pipeline does not: it decodes 1/25 as many images
per epoch, and with DALI's defaults (16 MiB device and 2 x 8 MiB pinned host buffers per thread, no
hardware-decoder preallocation) nvJPEG grows a buffer the first time an image needs more and keeps it,
so a few early val batches pay a reallocation and memory follows the largest image actually seen
instead of about 4.3 GiB pinned host and 3.1 GiB GPU per rank at 8 threads set aside up front.

On CUDA the images are emitted HWC: the batch tensor is NHWC memory, i.e. channels_last NCHW by a free
permute. The index and the extras are moved to the GPU inside DALI (`.gpu()`), with the images.
"""
from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import Pipeline, fn, pipeline_def, types

from pipeline.data.dali import rand_augment

PREFETCH = 2  # batches DALI prepares ahead of the one being consumed
# nvJPEG buffer sizes for the largest image in ImageNet (NVIDIA's ResNet-50 examples use the same figures)
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512
LARGEST_WIDTH, LARGEST_HEIGHT = 5980, 6430


@dataclass
class GraphSpec:
    train: bool
    views: int
    roi_decode: bool  # train, one view: decode only the window
    files: bool  # encoded images come as file names to read (folder / filelist), else as bytes (tars)
    extras: int  # extra outputs the feed hands (attached keys x views)
    batch_size: int
    image_size: int
    val_resize: int
    mean: list[float]  # on 0..255
    std: list[float]
    threads: int
    device_id: int | None  # None: CPU decode
    hw_decoder_load: float = 0.65
    rand_augment: tuple[int, int] | None = None  # train: (operations per view, magnitude bin); None = off

    @property
    def gpu(self) -> bool:
        return self.device_id is not None


def decoder_args(spec: GraphSpec) -> dict:
    args = dict(output_type=types.RGB, adjust_orientation=False)
    if not spec.gpu:
        return dict(device="cpu", **args)
    args.update(device="mixed", hw_decoder_load=spec.hw_decoder_load)
    if spec.train:  # preallocated for the largest image: see the module docstring
        args.update(device_memory_padding=DEVICE_MEMORY_PADDING, host_memory_padding=HOST_MEMORY_PADDING,
                    preallocate_width_hint=LARGEST_WIDTH, preallocate_height_hint=LARGEST_HEIGHT)
    return args


def normalize(spec: GraphSpec, images, mirror=0, crop: int | None = None):
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC" if spec.gpu else "CHW",
                                    mean=spec.mean, std=spec.std, mirror=mirror,
                                    **({"crop": (crop, crop)} if crop else {}))


def augmented(spec: GraphSpec, images, ra_args: list):
    """RandAugment with the feed's (operations, negate) of this view, when on."""
    if spec.rand_augment is None:
        return images
    num_ops, magnitude = spec.rand_augment
    return rand_augment.apply(images, *ra_args, num_ops=num_ops, magnitude=magnitude, image_size=spec.image_size)


def train_views(spec: GraphSpec, encoded, args: list, ra_args: list) -> list:
    """args: the feed's per-view (window, window, flip) outputs; ra_args: per-view (operations, negate)."""
    s = spec.image_size
    per_view = [args[3 * v:3 * v + 3] for v in range(spec.views)]
    per_view_ra = [ra_args[2 * v:2 * v + 2] for v in range(spec.views)]
    if spec.roi_decode:
        (start, shape, flip), = per_view
        images = fn.decoders.image_slice(encoded, start=start, shape=shape, axis_names="WH", **decoder_args(spec))
        return [normalize(spec, augmented(spec, fn.resize(images, size=(s, s)), per_view_ra[0]), mirror=flip)]
    images = fn.decoders.image(encoded, **decoder_args(spec))
    return [normalize(spec, augmented(spec, fn.resize(images, size=(s, s), roi_start=a, roi_end=b, roi_relative=False),
                                      ra), mirror=flip)
            for (a, b, flip), ra in zip(per_view, per_view_ra)]


def val_view(spec: GraphSpec, encoded) -> list:
    images = fn.resize(fn.decoders.image(encoded, **decoder_args(spec)), resize_shorter=spec.val_resize)
    return [normalize(spec, images, crop=spec.image_size)]


def build_pipeline(spec: GraphSpec, feed) -> Pipeline:
    """Outputs: the views' images, then the index, then the extras (each on the GPU when decoding there)."""
    window_outputs = 3 * spec.views if spec.train else 0
    ra_outputs = 2 * spec.views if spec.train and spec.rand_augment is not None else 0

    def graph():
        data, index, *rest = fn.external_source(source=feed, num_outputs=2 + window_outputs + ra_outputs + spec.extras,
                                                batch=True, batch_info=True)
        encoded = fn.io.file.read(data) if spec.files else data
        windows, ra_args = rest[:window_outputs], rest[window_outputs:window_outputs + ra_outputs]
        extras = rest[window_outputs + ra_outputs:]
        views = train_views(spec, encoded, windows, ra_args) if spec.train else val_view(spec, encoded)
        carried = [index, *extras]
        if spec.gpu:  # reach the device with the images, on DALI's stream
            carried = [x.gpu() for x in carried]
        return (*views, *carried)

    # conditional execution (RandAugment's per-sample choice of operation) needs DALI's pipeline_def
    pipe = pipeline_def(graph, enable_conditionals=ra_outputs > 0)(
        batch_size=spec.batch_size, num_threads=spec.threads, device_id=spec.device_id, prefetch_queue_depth=PREFETCH)
    pipe.build()
    return pipe
