"""A zoo of small ONNX graphs shaped like the models users bring, for tests, benchmarks, docs.

Each entry is a torch module with seeded random weights, exported with torch's
TorchScript exporter (``dynamo=False``, opset 17, constants folded) and a dynamic
``batch`` axis on every input and output, except ``converter_style``, whose batch is
fixed to 1 and whose graph is rewritten by :func:`to_converter_style` the way
tf2onnx- or paddle2onnx-style converters write graphs.

The graphs cover shapes a partitioner meets in the wild: a detector whose four
backbone stages all feed an FPN neck (``fpn_detector``, and ``fpn_detector_5m`` for
benchmarks), a U-Net with long skip connections, a DeepLab-style segmenter with ASPP
and a low-level decoder skip, a vision transformer, a text encoder with two int64
inputs whose mask is read by every block, a CNN with a long branch to a second output,
and a converter-style graph (fixed batch, initializers listed as inputs, no
``value_info``, ``/``- and ``:``-laden names).

Every model but ``fpn_detector_5m`` is small (0.05-0.9M parameters, 64x64 to 128x128
inputs) so that a test can partition it in seconds.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

from partitioner.atomic import atomic_output

OPSET = 17
"""ONNX opset every zoo model is exported with."""

VOCAB_SIZE = 1000
"""Vocabulary size of ``text_encoder``; ``input_ids`` lie in ``[0, VOCAB_SIZE)``."""

SEQ_LEN = 32
"""Sequence length of ``text_encoder``."""


@dataclass(frozen=True)
class ZooGraph:
    """What one zoo entry looks like from the outside.

    Attributes:
        name: The entry's key in ``ZOO``.
        inputs: ``(name, per-sample shape without the batch axis, dtype)`` for each
            graph input, dtype ``"float32"`` or ``"int64"``.
        outputs: The graph's output names, in order.
        description: One line on what the graph is and why it is in the zoo.
        classifier: Whether the first output is class logits.
        fixed_batch: ``None`` where every input and output has a dynamic ``batch``
            axis; otherwise the one batch size the graph accepts.
    """

    name: str
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]
    outputs: tuple[str, ...]
    description: str
    classifier: bool
    fixed_batch: int | None = None


# --------------------------------------------------------------------------- building blocks


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU; ``padding`` keeps the size at stride 1."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection on the shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def _randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every batch norm non-trivial statistics and affine terms, as trained ones have."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.weight.copy_(0.75 + 0.5 * torch.rand(m.num_features, generator=generator))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=generator))


# --------------------------------------------------------------------------- detector


class _FPNDetector(nn.Module):
    """Backbone with stages at strides 4, 8, 16, 32; FPN neck; one head shared by the levels."""

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        blocks: tuple[int, int, int, int],
        fpn_width: int,
        head_convs: int,
        num_anchors: int = 3,
        num_classes: int = 8,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = _conv_bn_relu(3, widths[0], stride=2)
        stages = []
        cin = widths[0]
        for width, count in zip(widths, blocks, strict=True):
            layers = [_BasicBlock(cin, width, stride=2)]
            layers += [_BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList(nn.Conv2d(w, fpn_width, 1) for w in widths)
        self.smooth = nn.ModuleList(nn.Conv2d(fpn_width, fpn_width, 3, 1, 1) for _ in widths)
        tower: list[nn.Module] = []
        for _ in range(head_convs):
            tower += [nn.Conv2d(fpn_width, fpn_width, 3, 1, 1), nn.ReLU(inplace=True)]
        self.head = nn.Sequential(*tower)
        self.box = nn.Conv2d(fpn_width, num_anchors * 4, 3, 1, 1)
        self.cls = nn.Conv2d(fpn_width, num_anchors * num_classes, 3, 1, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(image)
        feats = []  # C2..C5
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        inner = self.lateral[-1](feats[-1])
        pyramid = [self.smooth[-1](inner)]
        for level in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[level](feats[level])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            pyramid.insert(0, self.smooth[level](inner))  # P2..P5
        batch = image.shape[0]
        boxes, scores = [], []
        for p in pyramid:
            h = self.head(p)
            boxes.append(self.box(h).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            cls = self.cls(h).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes)
            scores.append(cls)
        return torch.cat(boxes, dim=1), torch.sigmoid(torch.cat(scores, dim=1))


def _fpn_detector() -> nn.Module:
    return _FPNDetector((16, 32, 48, 64), (1, 1, 1, 1), fpn_width=32, head_convs=1)


def _fpn_detector_5m() -> nn.Module:
    return _FPNDetector((32, 64, 128, 256), (2, 2, 4, 2), fpn_width=160, head_convs=2)


# --------------------------------------------------------------------------- U-Net


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout))


class _UNet(nn.Module):
    """U-Net: four 2x downsamplings, a bottleneck, four transposed-conv upsamplings."""

    def __init__(self, base: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(5)]  # 4 levels + bottleneck
        self.down = nn.ModuleList()
        cin = 3
        for width in widths[:-1]:
            self.down.append(_DoubleConv(cin, width))
            cin = width
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in range(3, -1, -1):
            self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.dec.append(_DoubleConv(2 * widths[level], widths[level]))
        self.out = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.out(x)


# --------------------------------------------------------------------------- DeepLab


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3s, image pooling; concat, project."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 4, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
            + [_conv_bn_relu(cin, cout, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU()
        )
        self.project = nn.Sequential(
            nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.pool(x)
        outs.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


def _dilated(block: _BasicBlock, dilation: int) -> _BasicBlock:
    """``block`` (stride 1) with both 3x3 convolutions dilated: a wider view, the same size."""
    for conv in (block.conv1, block.conv2):
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)
    return block


def _residual_stage(
    cin: int, cout: int, blocks: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """``blocks`` basic blocks; the first strides (or, dilated, keeps the size) and widens."""
    layers = [_BasicBlock(cin, cout, stride)]
    layers += [_BasicBlock(cout, cout) for _ in range(blocks - 1)]
    if dilation > 1:
        layers = [_dilated(block, dilation) for block in layers]
    return nn.Sequential(*layers)


class _DeepLab(nn.Module):
    """DeepLabv3+-style: ResNet-like backbone at output stride 8, ASPP, stride-4 decoder skip.

    As in the real network the backbone holds most of the multiply-adds (about two
    thirds; no single convolution above 12%): a deep stem, three blocks at stride 4
    (the low-level feature), two at stride 8, and a last stage dilated instead of
    strided, so ASPP sees the stride-8 map.
    """

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, stride=2), _conv_bn_relu(16, 32))
        self.low = _residual_stage(32, 48, blocks=3, stride=2)  # stride 4: the low-level feature
        self.mid = _residual_stage(48, 64, blocks=2, stride=2)  # stride 8
        self.high = _residual_stage(64, 96, blocks=2, dilation=2)  # stride 8, dilated
        self.aspp = _ASPP(96, 64)
        self.low_proj = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.decoder = nn.Sequential(_conv_bn_relu(64 + 16, 64), _conv_bn_relu(64, 64))
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        low = self.low(self.stem(image))
        x = self.aspp(self.high(self.mid(low)))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.decoder(torch.cat([x, F.relu(self.low_proj(low))], dim=1))
        x = self.classifier(x)
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- transformers


class _Attention(nn.Module):
    """Multi-head self-attention written out: matmuls, scale, optional additive bias, softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        if bias is not None:
            scores = scores + bias
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.proj(out)


class _EncoderBlock(nn.Module):
    """Pre-norm transformer block; a masked one builds its own additive attention bias."""

    def __init__(self, dim: int, heads: int, mlp: int, *, masked: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        if masked:
            # The 1 of 1 - mask, one per block: the exporter's common-subexpression pass
            # would otherwise compute every block's bias once, in the first block, and the
            # mask input would no longer be read late in the graph.
            self.register_buffer("one", torch.ones((), dtype=torch.int64))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bias = None
        if mask is not None:  # [B, N] of 0/1 -> [B, 1, 1, N] of 0 / -1e4
            one: torch.Tensor = self.one  # type: ignore[assignment]  # a registered buffer
            bias = (one - mask).to(x.dtype).unsqueeze(1).unsqueeze(2) * -1e4
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    """Small ViT: patch conv, class token, learned positions, 4 blocks, class-token head."""

    def __init__(
        self, image: int = 64, patch: int = 8, dim: int = 64, depth: int = 4, classes: int = 10
    ) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(_EncoderBlock(dim, 4, 2 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch(image).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(image.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class _TextEncoder(nn.Module):
    """Token and position embeddings, 4 masked blocks, mask-weighted mean pooling, head."""

    def __init__(self, dim: int = 64, depth: int = 4, classes: int = 4) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB_SIZE, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, SEQ_LEN, dim))
        self.blocks = nn.ModuleList(
            _EncoderBlock(dim, 4, 2 * dim, masked=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.tokens(input_ids) + self.pos
        for block in self.blocks:
            x = block(x, attention_mask)
        x = self.norm(x)
        weights = attention_mask.to(x.dtype).unsqueeze(-1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


# --------------------------------------------------------------------------- CNNs


class _TwoOutputs(nn.Module):
    """Shared trunk to class logits; an embedding head that branches off mid-trunk."""

    def __init__(self, classes: int = 10, embed: int = 32) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 16, stride=2)  # 32x32
        self.stage1 = nn.Sequential(_conv_bn_relu(16, 32, stride=2), _conv_bn_relu(32, 32))  # 16
        self.stage2 = nn.Sequential(_conv_bn_relu(32, 64, stride=2), _conv_bn_relu(64, 64))  # 8
        self.stage3 = nn.Sequential(_conv_bn_relu(64, 96, stride=2), _conv_bn_relu(96, 96))  # 4
        self.classifier = nn.Linear(96, classes)
        self.branch = nn.Sequential(  # the long branch, from stage1's output
            _conv_bn_relu(32, 32),
            _conv_bn_relu(32, 48, stride=2),
            _conv_bn_relu(48, 48),
            _conv_bn_relu(48, 64, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Linear(64, embed)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.stage1(self.stem(image))
        x = self.stage3(self.stage2(mid))
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        embedding = F.normalize(self.embed(self.branch(mid)), dim=1)
        return logits, embedding


class _SmallResNet(nn.Module):
    """ResNet-like CNN returning logits and softmax probabilities, as Keras models often do."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 16)
        self.layers = nn.Sequential(
            _BasicBlock(16, 16, stride=2),
            _BasicBlock(16, 32, stride=2),
            _BasicBlock(32, 32),
            _BasicBlock(32, 64, stride=2),
            _BasicBlock(64, 64),
        )
        self.fc = nn.Linear(64, classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layers(self.stem(image))
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, torch.softmax(logits, dim=1)


# --------------------------------------------------------------------------- the zoo


def _image(size: int, name: str = "image") -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return ((name, (3, size, size), "float32"),)


ZOO: dict[str, ZooGraph] = {
    "fpn_detector": ZooGraph(
        "fpn_detector",
        _image(128),
        ("boxes", "scores"),
        "Detector: 4-stage backbone (strides 4-32) whose C2..C5 all feed an FPN neck, "
        "and a head shared by P2..P5; boxes [B, 4080, 4], scores [B, 4080, 8].",
        classifier=False,
    ),
    "fpn_detector_5m": ZooGraph(
        "fpn_detector_5m",
        _image(320),
        ("boxes", "scores"),
        "fpn_detector, wider and deeper (about 5M parameters) at 320x320, for benchmarks; "
        "boxes [B, 25500, 4], scores [B, 25500, 8].",
        classifier=False,
    ),
    "unet": ZooGraph(
        "unet",
        _image(96),
        ("mask",),
        "U-Net: 4 levels down and up with skip concatenations; mask [B, 2, 96, 96].",
        classifier=False,
    ),
    "deeplab": ZooGraph(
        "deeplab",
        _image(96),
        ("segmentation",),
        "DeepLabv3+-style: ResNet-like backbone (most of the compute) at output stride 8, "
        "its last stage dilated; ASPP (dilated 3x3s and an image-pooling branch), decoder "
        "joining the stride-4 feature; segmentation [B, 5, 96, 96].",
        classifier=False,
    ),
    "vit": ZooGraph(
        "vit",
        _image(64),
        ("logits",),
        "Vision transformer: 8x8 patches, class token, 4 blocks of explicit attention; "
        "logits [B, 10].",
        classifier=True,
    ),
    "text_encoder": ZooGraph(
        "text_encoder",
        (
            ("input_ids", (SEQ_LEN,), "int64"),
            ("attention_mask", (SEQ_LEN,), "int64"),
        ),
        ("logits",),
        "Text encoder: two int64 inputs; every block builds its attention bias from the "
        "mask, and pooling reads it again; logits [B, 4].",
        classifier=True,
    ),
    "two_outputs": ZooGraph(
        "two_outputs",
        _image(64),
        ("class_logits", "embedding"),
        "CNN with a shared trunk: class_logits [B, 10], and an L2-normalized embedding "
        "[B, 32] on a long branch that leaves the trunk midway.",
        classifier=True,
    ),
    "converter_style": ZooGraph(
        "converter_style",
        _image(64, "input_1:0"),
        ("Identity:0", "Identity_1:0"),
        "Small ResNet-like CNN as a tf2onnx-style converter writes it: batch fixed to 1, "
        "initializers listed as inputs, no value_info, names like 'StatefulPartitionedCall/"
        "model/conv2d_3/Conv2D:0'; outputs logits and probabilities [1, 10].",
        classifier=True,
        fixed_batch=1,
    ),
}

TEST_MODELS = tuple(name for name in ZOO if name != "fpn_detector_5m")
"""Every entry but the benchmark-sized ``fpn_detector_5m``: the models tests and figures use."""
"""Every zoo entry by name."""

_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "fpn_detector": _fpn_detector,
    "fpn_detector_5m": _fpn_detector_5m,
    "unet": _UNet,
    "deeplab": _DeepLab,
    "vit": _ViT,
    "text_encoder": _TextEncoder,
    "two_outputs": _TwoOutputs,
    "converter_style": _SmallResNet,
}

_TORCH_OUTPUT_NAMES: dict[str, tuple[str, ...]] = {"converter_style": ("logits", "probabilities")}
"""Output names at export, where ``to_converter_style`` renames them afterwards."""


def _entry(name: str) -> ZooGraph:
    """The zoo entry ``name``; ValueError naming the known entries otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise ValueError(f"unknown zoo model {name!r}: known models are {', '.join(ZOO)}") from None


def build_zoo_module(name: str, *, seed: int = 0) -> nn.Module:
    """Build the torch module behind a zoo entry, with seeded random weights, in eval mode.

    The global torch random state is left as it was.

    Args:
        name: A key of ``ZOO``.
        seed: Seed of the weights; the same seed gives the same weights.

    Returns:
        The module; its forward takes the entry's inputs in order.

    Raises:
        ValueError: If ``name`` is not in ``ZOO``.
    """
    _entry(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _BUILDERS[name]()
        generator = torch.Generator().manual_seed(seed + 1)
        _randomize_batch_norm(module, generator)
    return module.eval()


def _export(name: str, module: nn.Module, f: Path | io.BytesIO) -> None:
    """Export ``module`` for entry ``name`` to ``f`` with the TorchScript exporter."""
    entry = ZOO[name]
    examples = tuple(torch.from_numpy(array) for array in sample_inputs(name, 1, seed=0).values())
    input_names = [spec[0] for spec in entry.inputs]
    output_names = list(_TORCH_OUTPUT_NAMES.get(name, entry.outputs))
    dynamic_axes = None
    if entry.fixed_batch is None:
        dynamic_axes = {n: {0: "batch"} for n in (*input_names, *output_names)}
    else:
        input_names = [f"input_{i}" for i in range(len(input_names))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            examples,
            f,  # type: ignore[arg-type]  # a file object works too
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def write_zoo_model(name: str, path: Path, *, seed: int = 0) -> Path:
    """Export a zoo entry to an ONNX file, checked by ``onnx.checker``.

    The file appears at ``path`` whole or not at all; its folder is created if missing.

    Args:
        name: A key of ``ZOO``.
        path: Destination ``.onnx`` file.
        seed: Seed of the random weights; the same seed writes the same graph.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``name`` is not in ``ZOO``; the message names the known entries.
    """
    entry = _entry(name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = build_zoo_module(name, seed=seed)
    with atomic_output(path) as tmp:
        if entry.fixed_batch is None:
            _export(name, module, tmp)
        else:
            buffer = io.BytesIO()
            _export(name, module, buffer)
            model = to_converter_style(onnx.load_from_string(buffer.getvalue()))
            onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))
    return path


def sample_inputs(name: str, count: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random valid inputs for a zoo entry, batch first.

    Images are standard normal float32. ``input_ids`` lie in ``[0, VOCAB_SIZE)``;
    ``attention_mask`` is 1 on a random-length prefix (at least the first token) and 0
    after it. For an entry with a ``fixed_batch``, feed the rows one batch at a time.

    Args:
        name: A key of ``ZOO``.
        count: Number of samples, the leading axis of every array; at least 1.
        seed: Seed of the values.

    Returns:
        One array per graph input name, in the graph's input order.

    Raises:
        ValueError: If ``name`` is not in ``ZOO`` or ``count`` is below 1.
    """
    entry = _entry(name)
    if count < 1:
        raise ValueError(f"count={count} samples asked for; give at least 1")
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for input_name, shape, dtype in entry.inputs:
        if dtype == "float32":
            arrays[input_name] = rng.standard_normal((count, *shape), dtype=np.float32)
        elif input_name == "attention_mask":
            lengths = rng.integers(1, shape[-1] + 1, size=(count, 1))
            arrays[input_name] = (np.arange(shape[-1]) < lengths).astype(np.int64)
        else:
            arrays[input_name] = rng.integers(0, VOCAB_SIZE, size=(count, *shape), dtype=np.int64)
    return arrays


# --------------------------------------------------------------------------- converter style

_CONVERTER_PREFIX = "StatefulPartitionedCall/model"

_TF_LAYERS: dict[str, tuple[str, str]] = {
    "Conv": ("conv2d", "Conv2D"),
    "ConvTranspose": ("conv2d_transpose", "conv2d_transpose"),
    "Relu": ("re_lu", "Relu"),
    "Add": ("add", "add"),
    "Sub": ("subtract", "sub"),
    "Mul": ("multiply", "mul"),
    "Div": ("truediv", "truediv"),
    "MatMul": ("dense", "MatMul"),
    "Gemm": ("dense", "BiasAdd"),
    "Softmax": ("softmax", "Softmax"),
    "Sigmoid": ("sigmoid", "Sigmoid"),
    "MaxPool": ("max_pooling2d", "MaxPool"),
    "AveragePool": ("average_pooling2d", "AvgPool"),
    "GlobalAveragePool": ("global_average_pooling2d", "Mean"),
    "ReduceMean": ("global_average_pooling2d", "Mean"),
    "Flatten": ("flatten", "Reshape"),
    "Reshape": ("reshape", "Reshape"),
    "Transpose": ("permute", "transpose"),
    "Concat": ("concatenate", "concat"),
    "Resize": ("up_sampling2d", "resize/ResizeBilinear"),
    "BatchNormalization": ("batch_normalization", "FusedBatchNormV3"),
    "Identity": ("identity", "Identity"),
    "Constant": ("const", "Const"),
}


def _layer_name(op_type: str, counters: dict[str, int]) -> str:
    """``conv2d/Conv2D``, ``conv2d_1/Conv2D``, ...: Keras layer numbering, per layer kind."""
    default = "".join(f"_{c.lower()}" if c.isupper() else c for c in op_type).lstrip("_")
    layer, op = _TF_LAYERS.get(op_type, (default, op_type))
    index = counters.get(layer, 0)
    counters[layer] = index + 1
    return f"{layer}_{index}/{op}" if index else f"{layer}/{op}"


def _rename_subgraph_refs(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename outer-scope references inside ``If``/``Loop``/``Scan`` bodies."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                local = {v.name for v in sub.input} | {t.name for t in sub.initializer}
                local |= {o for n in sub.node for o in n.output}
                for sub_node in sub.node:
                    for i, name in enumerate(sub_node.input):
                        if name in names and name not in local:
                            sub_node.input[i] = names[name]
                for out in sub.output:
                    if out.name in names and out.name not in local:
                        out.name = names[out.name]
                _rename_subgraph_refs(sub, names)


def _fix_batch(value: onnx.ValueInfoProto) -> None:
    """Set the leading dimension of a tensor's declared shape to 1."""
    tensor_type = value.type.tensor_type
    if tensor_type.HasField("shape") and tensor_type.shape.dim:
        tensor_type.shape.dim[0].Clear()
        tensor_type.shape.dim[0].dim_value = 1


def to_converter_style(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a torch export the way tf2onnx- or paddle2onnx-style converters write graphs.

    The copy has the batch (leading) dimension of every graph input and output fixed
    to 1, no ``value_info``, every initializer also listed as a graph input (with its
    type and shape; ``Constant`` nodes stay nodes, as ONNX Runtime cannot infer the shape
    of a ``Resize`` whose sizes hang off an overridable initializer), and
    converter-like names: inputs ``input_1:0``, ..., outputs ``Identity:0``,
    ``Identity_1:0``, ..., nodes ``StatefulPartitionedCall/model/conv2d_3/Conv2D``
    with outputs ``...Conv2D:0``, weights ``.../Conv2D/ReadVariableOp:0``. It computes
    what ``model`` computes on a batch of 1.

    Args:
        model: A model from torch's exporter (or any graph without sparse initializers).

    Returns:
        A new model; ``model`` is left unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.producer_name, out.producer_version = "tf2onnx", "1.16.1 15c810"
    graph = out.graph
    del graph.value_info[:]
    init_names = {t.name for t in graph.initializer}
    real_inputs = [v for v in graph.input if v.name not in init_names]
    del graph.input[:]
    graph.input.extend(real_inputs)

    names = _converter_names(graph)
    _name_outputs(graph, names)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for j, name in enumerate(node.output):
            node.output[j] = names.get(name, name)
    _rename_subgraph_refs(graph, names)
    for value in graph.input:
        value.name = names[value.name]
        _fix_batch(value)
    for value in graph.output:
        _fix_batch(value)
    for init in graph.initializer:
        init.name = names[init.name]
        graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )
    return out


def _converter_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Name nodes in place; map inputs, node outputs (but graph outputs), initializers."""
    names: dict[str, str] = {"": ""}
    for i, value in enumerate(graph.input, start=1):
        names[value.name] = f"input_{i}:0"
    output_tensors = {v.name for v in graph.output}
    counters: dict[str, int] = {}
    for node in graph.node:
        node.name = f"{_CONVERTER_PREFIX}/{_layer_name(node.op_type, counters)}"
        for j, name in enumerate(node.output):
            if name and name not in output_tensors:
                names[name] = f"{node.name}:{j}"
    taken = set(names.values())
    for init in graph.initializer:  # named after the first node that reads them
        reader = next((n for n in graph.node if init.name in n.input), None)
        stem = f"{reader.name if reader is not None else _CONVERTER_PREFIX}/ReadVariableOp"
        new, k = f"{stem}:0", 0
        while new in taken:  # a layer's second weight: ReadVariableOp_1:0, ...
            k += 1
            new = f"{stem}_{k}:0"
        taken.add(new)
        names[init.name] = new
    return names


def _name_outputs(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename graph outputs ``Identity:0``, ``Identity_1:0``, ... and add them to ``names``.

    The producer's tensor takes the new name where it can; an output that is also an
    input or an initializer, or is listed twice, gets an ``Identity`` node of its own.
    """
    seen: set[str] = set()
    for k, value in enumerate(graph.output):
        new = "Identity:0" if k == 0 else f"Identity_{k}:0"
        if value.name in names or value.name in seen:
            source = names.get(value.name, value.name)
            graph.node.append(helper.make_node("Identity", [source], [new], name=new[:-2]))
            names[new] = new
        else:
            names[value.name] = new
        seen.add(value.name)
        value.name = new


__all__ = [
    "OPSET",
    "SEQ_LEN",
    "VOCAB_SIZE",
    "ZOO",
    "ZooGraph",
    "build_zoo_module",
    "sample_inputs",
    "to_converter_style",
    "write_zoo_model",
]
