"""The U-Nets of the paper (liver) and of the same group (liver lesions), in PyTorch.

Both follow ``create_unet_like_model`` of the authors' ``pyliverlesionseg``
(Keras): four resolution levels, three skip connections, two convolutions
per level and side, "pre-activation" order (normalise -> leaky ReLU ->
convolve), instance normalisation without learned parameters
``(x - mean) / (std + 1e-7)`` over the spatial axes, leaky ReLU slope 0.01,
max-pooling down, and a final 1x1x1 convolution with a sigmoid.

Liver network (:data:`LIVER_SPEC`): down/up-sampling by 3, "same" padding,
upsampling by repetition followed by a 3x3x3 stride-1 average ("linear"
upsampling of the authors, which trims 2 voxels), skip paths centre-cropped
to match. An input of 189x162x162 (x, y, z) gives 163x136x136; in general
every axis of the input must be a multiple of 27 and the output is 26
voxels shorter. Widths 20/40, 40/80, 80/160, 160/160.

Lesion network (:data:`LESION_SPEC`): down/up-sampling by 2, "valid"
padding, upsampling by repetition, residual blocks (1x1x1 projection when
the width changes). 180x172x86 (x, y, z) gives 92x84x42.

Tensors here are (N, C, z, y, x), the project's array order; the authors'
arrays are (x, y, z), so their kernel (3, 3, 1) over (x, y, z) is our
(1, 3, 3) over (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sirtreg.errors import InputError

_EPSILON = 1e-7  # Keras K.epsilon(), added to the standard deviation
_SLOPE = 0.01  # leaky ReLU slope


@dataclass(frozen=True)
class UNetSpec:
    """Architecture of one network; kernels are (z, y, x).

    ``down_kernels[l]`` / ``up_kernels[l]`` are the two kernels of level l
    (0 = full resolution) on the way down / up, ``down_widths`` and
    ``up_widths`` their output channels. ``input_shape`` and
    ``output_shape`` (z, y, x) are the field the network was trained on.
    """

    name: str
    factor: int
    padding: str  # "same" or "valid"
    upsampling: str  # "linear" (repeat + 3x3x3 mean) or "copy" (repeat)
    residual: bool
    down_kernels: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]
    up_kernels: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]
    down_widths: tuple[tuple[int, int], ...]
    up_widths: tuple[tuple[int, int], ...]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]  # (x, y, z) voxel size the network expects

    @property
    def levels(self) -> int:
        return len(self.down_kernels)

    @property
    def margin(self) -> tuple[int, int, int]:
        """Voxels (z, y, x) lost on each side between input and output."""
        return tuple((i - o) // 2 for i, o in zip(self.input_shape, self.output_shape))  # type: ignore[return-value]


_XY = (1, 3, 3)  # the authors' (3, 3, 1): in-plane only
_XYZ = (3, 3, 3)

LIVER_SPEC = UNetSpec(
    name="liver",
    factor=3,
    padding="same",
    upsampling="linear",
    residual=False,
    down_kernels=((_XY, _XYZ), (_XY, _XYZ), (_XY, _XYZ), (_XYZ, _XYZ)),
    up_kernels=((_XYZ, _XY), (_XYZ, _XY), (_XYZ, _XY)),
    down_widths=((20, 40), (40, 80), (80, 160), (160, 160)),
    up_widths=((40, 20), (80, 40), (160, 80)),
    input_shape=(162, 162, 189),
    output_shape=(136, 136, 163),
    spacing_mm=(3.0, 3.0, 3.0),
)

LESION_SPEC = UNetSpec(
    name="lesion",
    factor=2,
    padding="valid",
    upsampling="copy",
    residual=True,
    down_kernels=((_XY, _XYZ), (_XY, _XYZ), (_XY, _XYZ), (_XY, _XYZ)),
    up_kernels=((_XYZ, _XY), (_XYZ, _XY), (_XYZ, _XY)),
    down_widths=((20, 40), (40, 80), (80, 160), (160, 160)),
    up_widths=((40, 20), (80, 40), (160, 80)),
    input_shape=(86, 172, 180),
    output_shape=(42, 84, 92),
    spacing_mm=(1.0, 1.0, 3.0),
)


_SLAB = 8  # z slices per partial sum of squares in inference: a few tens of MB at most


def instance_normalise(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-7) per sample and channel over (z, y, x), population std.

    Two passes (the mean, then the squares of the centred values) rather than ``torch.var_mean``, whose one-pass
    reduction over (z, y, x) of a channels-last tensor takes half the network's time besides the convolutions
    (the liver network on one core: 27 -> 22 s). In place when no gradient is needed (inference), to save memory;
    the squares are then summed a slab of z at a time, so that no full-size temporary is made.
    """
    spatial = (2, 3, 4)
    if torch.is_grad_enabled() and x.requires_grad:
        centred = x - x.mean(dim=spatial, keepdim=True)
        return centred / (centred.square().mean(dim=spatial, keepdim=True).sqrt() + _EPSILON)
    centred = x.sub_(x.mean(dim=spatial, keepdim=True))
    squares = sum(slab.square().sum(dim=spatial, keepdim=True) for slab in centred.split(_SLAB, dim=2))
    return centred.div_(squares.div_(x[0, 0].numel()).sqrt_().add_(_EPSILON))


def _activate(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def centre_crop(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Crop the spatial axes of (N, C, z, y, x) symmetrically to ``shape`` (as Keras Cropping3D)."""
    slices = []
    for have, want in zip(x.shape[2:], shape):
        lost = have - want
        if lost < 0 or lost % 2:
            raise InputError(f"cannot centre-crop {tuple(x.shape[2:])} to {tuple(shape)}")
        slices.append(slice(lost // 2, lost // 2 + want))
    return x[(slice(None), slice(None), *slices)]


def _conv(in_ch: int, out_ch: int, kernel: tuple[int, int, int], padding: str) -> nn.Conv3d:
    pad = tuple(k // 2 for k in kernel) if padding == "same" else 0
    return nn.Conv3d(in_ch, out_ch, kernel, padding=pad)


class _Block(nn.Module):
    """Two convolutions, each preceded by normalise + activate (except the very first of the net)."""

    def __init__(self, in_ch: int, widths: tuple[int, int], kernels, *, padding: str, residual: bool, first: bool):
        super().__init__()
        self.first = first
        self.conv_a = _conv(in_ch, widths[0], kernels[0], padding)
        self.conv_b = _conv(widths[0], widths[1], kernels[1], padding)
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if in_ch == widths[1] else nn.Conv3d(in_ch, widths[1], 1)
        self.residual = residual

    def keras_order(self) -> list[nn.Conv3d]:
        """Convolutions in the order Keras created them (the order of the HDF5 weights)."""
        convs = [self.conv_a, self.conv_b]
        if isinstance(self.shortcut, nn.Conv3d):
            convs.append(self.shortcut)
        return convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.residual else None
        path = x if self.first else _activate(instance_normalise(x if shortcut is None else x.clone()))
        path = self.conv_a(path)
        path = self.conv_b(_activate(instance_normalise(path)))
        if shortcut is not None:
            path = path + self.shortcut(centre_crop(shortcut, tuple(path.shape[2:])))
        return path


class UNet3D(nn.Module):
    """The authors' U-Net; input (N, 1, z, y, x) normalised image, output (N, 1, z', y', x') probabilities.

    See :func:`output_shape` for the shapes it takes (liver: multiples of
    27, output 26 voxels shorter per axis).
    """

    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        opts = {"padding": spec.padding, "residual": spec.residual}
        down = []
        in_ch = 1
        for level, (kernels, widths) in enumerate(zip(spec.down_kernels, spec.down_widths)):
            down.append(_Block(in_ch, widths, kernels, first=level == 0, **opts))
            in_ch = widths[1]
        self.down = nn.ModuleList(down)
        up = []
        for level in reversed(range(spec.levels - 1)):
            skip = spec.down_widths[level][1]
            up.append(_Block(skip + in_ch, spec.up_widths[level], spec.up_kernels[level], first=False, **opts))
            in_ch = spec.up_widths[level][1]
        self.up = nn.ModuleList(up)  # deepest first, as Keras built them
        self.head = nn.Conv3d(in_ch, 1, 1)

    def keras_order(self) -> list[nn.Conv3d]:
        """All convolutions in the order of the Keras model (conv3d_1, conv3d_2, ...)."""
        convs = [c for block in self.down for c in block.keras_order()]
        convs += [c for block in self.up for c in block.keras_order()]
        return [*convs, self.head]

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat each voxel ``factor`` times per axis; "linear" then takes a stride-1 mean over
        ``factor`` voxels per axis, which equals trilinear interpolation with aligned corners
        onto ``factor * (n - 1) + 1`` voxels (computed that way: faster, same values)."""
        f = self.spec.factor
        if self.spec.upsampling == "linear":
            size = tuple(f * (n - 1) + 1 for n in x.shape[2:])
            return F.interpolate(x, size=size, mode="trilinear", align_corners=True)
        return F.interpolate(x, scale_factor=f, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Liver (or lesion) probabilities, (N, 1, z', y', x')."""
        return torch.sigmoid(self.logits(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The final layer before its sigmoid, (N, 1, z', y', x')."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"network input must be (N, 1, z, y, x), got {tuple(x.shape)}")
        output_shape(self.spec, tuple(x.shape[2:]))
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = F.max_pool3d(x, self.spec.factor)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = self._upsample(x)
            # no name keeps the skip or the upsampled tensor past the concatenation: the peak memory of segmenting
            # a liver falls from 3.7 to 3.0 GB (as many fewer pages to fault in), the values are the same
            x = torch.cat([centre_crop(skips.pop(), tuple(x.shape[2:])), x], dim=1)
            x = block(x)
        return self.head(_activate(instance_normalise(x)))


def output_shape(spec: UNetSpec, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Output (z, y, x) of the network for an input (z, y, x); InputError when it cannot take it."""
    if len(input_shape) != 3:
        raise InputError(f"the network takes 3D inputs (z, y, x), got shape {tuple(input_shape)}")
    out = []
    for axis, n in enumerate(input_shape):
        sizes, size = [], int(n)
        for level in range(spec.levels):
            if level > 0:
                if size % spec.factor:
                    size = -1
                    break
                size //= spec.factor
            if spec.padding == "valid":
                size -= sum(k[axis] - 1 for k in spec.down_kernels[level])
            sizes.append(size)
        for level in reversed(range(spec.levels - 1)):
            if size <= 0:
                break
            size = size * spec.factor - (spec.factor - 1 if spec.upsampling == "linear" else 0)
            if sizes[level] < size or (sizes[level] - size) % 2:
                size = -1
                break
            if spec.padding == "valid":
                size -= sum(k[axis] - 1 for k in spec.up_kernels[level])
        if size <= 0:
            raise InputError(
                f"the {spec.name} network cannot take an input of {tuple(input_shape)} (z, y, x); "
                f"it was trained on {spec.input_shape}"
            )
        out.append(size)
    return tuple(out)  # type: ignore[return-value]


def convert_keras_weights(h5_path, spec: UNetSpec) -> dict[str, torch.Tensor]:
    """State dict for ``UNet3D(spec)`` from the authors' Keras HDF5 weight file.

    Keras kernels (kx, ky, kz, in, out) over (x, y, z) become PyTorch
    (out, in, kz, ky, kx) over (z, y, x); biases are copied. Layers are
    matched by creation order (conv3d_1, conv3d_2, ...) and every shape is
    checked.
    """
    import h5py

    net = UNet3D(spec)
    convs = net.keras_order()
    with h5py.File(h5_path, "r") as f:
        names = sorted((n for n in f.keys() if n.startswith("conv3d_")), key=lambda n: int(n.split("_")[1]))
        if len(names) != len(convs):
            raise InputError(f"{h5_path}: {len(names)} convolutions, the {spec.name} network has {len(convs)}")
        for name, conv in zip(names, convs):
            kernel = torch.from_numpy(f[name][name]["kernel:0"][()]).permute(4, 3, 2, 1, 0).contiguous()
            bias = torch.from_numpy(f[name][name]["bias:0"][()])
            if kernel.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise InputError(f"{h5_path}: {name} has shape {tuple(kernel.shape)}, expected {tuple(conv.weight.shape)}")
            with torch.no_grad():
                conv.weight.copy_(kernel)
                conv.bias.copy_(bias)
    return net.state_dict()
