"""ONNX and TorchScript files of a model, each verified against PyTorch (``densevision export``).

Kinds of model and what their exports take and return:

- backbone (``--features-only``): image ``(N, 3, H, W)`` -> one output per feature, named ``c1``..``c5``
  (or the stride-1 ``c0`` ... of CIFAR / FC-DenseNet stems), in high-to-low resolution order;
- segmentation model or classifier: image ``(N, 3, H, W)`` -> ``logits`` ``(N, C, H, W)`` or ``(N, C)``;
- detector (torchvision Faster / Mask R-CNN, RetinaNet, FCOS): one image ``(3, H, W)`` in [0, 1] ->
  ``boxes`` ``(K, 4)``, ``labels`` ``(K,)``, ``scores`` ``(K,)`` [, ``masks`` ``(K, 1, H, W)``]; the batch
  is one image (torchvision's ONNX support is per image).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``, opset 17 by default, >= 11 for detectors):
it handles torchvision detectors and dynamic axes, and is much faster than the dynamo exporter on these
models (README, "Export").

TorchScript uses ``torch.jit.trace`` (the backbone's forward picks its stages with Python-level control
flow, which tracing unrolls), except for detectors, which are first tried with ``torch.jit.script``; when
scripting fails the reason is printed and they are traced instead.

Verification: each file is loaded (onnxruntime / ``torch.jit.load``) and run on the export sample and,
with ``--dynamic``, on a second batch and image size; every output must satisfy
``max|exported - pytorch| <= atol + rtol * max|pytorch|`` with ``atol = 1e-4``, ``rtol = 1e-3`` (float32).
Detections must also agree in number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from densevision.models.kinds import model_kind

ATOL, RTOL = 1e-4, 1e-3
DETECTION_OUTPUTS = ("boxes", "labels", "scores", "masks")


class ExportWrapper(nn.Module):
    """``model`` with a flat tuple of tensors as output, the form ONNX and tracing need."""

    def __init__(self, model: nn.Module, kind: str, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.output_names = tuple(output_names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Backbone / dense: (N, 3, H, W); detection: (3, H, W). -> outputs in ``output_names`` order."""
        if self.kind == "detection":
            detection = self.model([x])[0]
            return tuple(detection[name] for name in self.output_names)
        out = self.model(x)
        return tuple(out.values()) if isinstance(out, dict) else (out,)


@dataclass
class Comparison:
    """One verification run of an exported file against PyTorch."""

    file: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_ref: float
    counts_match: bool = True

    @property
    def ok(self) -> bool:
        return self.counts_match and self.max_abs_diff <= ATOL + RTOL * self.max_abs_ref

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        counts = "" if self.counts_match else " (output sizes differ)"
        return (
            f"  {verdict:8} {self.file.name} input {self.input_shape}: max |diff| {self.max_abs_diff:.2e}, "
            f"max |pytorch| {self.max_abs_ref:.2e}, tolerance {ATOL:g} + {RTOL:g} * max{counts}"
        )


def compare(file: Path, x: Tensor, exported: Sequence[Tensor], reference: Sequence[Tensor]) -> Comparison:
    """Element-wise comparison of each exported output with PyTorch's (sizes must agree)."""
    diff, ref_max, counts = 0.0, 0.0, len(exported) == len(reference)
    for got, want in zip(exported, reference, strict=False):
        got, want = torch.as_tensor(got).float(), want.float()
        if got.shape != want.shape:
            counts = False
            continue
        if want.numel():
            diff = max(diff, float((got - want).abs().max()))
            ref_max = max(ref_max, float(want.abs().max()))
    return Comparison(file, tuple(x.shape), diff, ref_max, counts)


def output_names(model: nn.Module, kind: str, sample: Tensor) -> list[str]:
    """Names of the exported outputs (feature names, ``logits`` or the detection fields present)."""
    if kind == "backbone":
        return [spec.name for spec in model.feature_info]
    if kind == "dense":
        return ["logits"]
    with torch.no_grad():
        keys = model([sample])[0].keys()
    return [name for name in DETECTION_OUTPUTS if name in keys]


def sample_inputs(kind: str, batch: int, size: Sequence[int], dynamic: bool) -> list[Tensor]:
    """The export sample, and with ``dynamic`` a second one with another batch and image size."""
    gen = torch.Generator().manual_seed(0)

    def image(n: int, h: int, w: int) -> Tensor:
        if kind == "detection":
            return torch.rand(3, h, w, generator=gen)
        return torch.randn(n, 3, h, w, generator=gen)

    h, w = size
    samples = [image(batch, h, w)]
    if dynamic:
        samples.append(image(batch + 1, h + h // 2, w + w // 4))
    return samples


def export_onnx(wrapper: ExportWrapper, sample: Tensor, path: Path, *, dynamic: bool, opset: int) -> None:
    """Write ``wrapper`` as ONNX; with ``dynamic``, batch (not for detectors), height and width are free."""
    axes: dict[str, dict[int, str]] = {}
    if dynamic:
        image_axes = (
            {1: "height", 2: "width"}
            if wrapper.kind == "detection"
            else {0: "batch", 2: "height", 3: "width"}
        )
        axes["image"] = image_axes
        for name in wrapper.output_names:
            axes[name] = {0: "detections"} if wrapper.kind == "detection" else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
        torch.onnx.export(
            wrapper,
            (sample,),
            str(path),
            input_names=["image"],
            output_names=list(wrapper.output_names),
            dynamic_axes=axes or None,
            opset_version=opset,
            dynamo=False,
        )


def onnx_runner(path: Path) -> Callable[[Tensor], list[Tensor]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(out) for out in session.run(None, {"image": x.numpy()})]


def export_torchscript(wrapper: ExportWrapper, sample: Tensor, path: Path) -> tuple[str, str | None]:
    """Write TorchScript; -> (``"script"`` or ``"trace"``, why scripting failed or None)."""
    reason = None
    if wrapper.kind == "detection":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                torch.jit.save(torch.jit.script(wrapper.model), str(path))
            return "script", None
        except Exception as err:  # the scripting compiler raises many types
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = f"{type(err).__name__}: " + " ".join(lines[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (sample,), strict=False, check_trace=False)
        torch.jit.save(traced, str(path))
    return "trace", reason


def torchscript_runner(path: Path, wrapper: ExportWrapper, how: str) -> Callable[[Tensor], list[Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    if how == "script":  # a scripted torchvision detector returns (losses, detections)
        return lambda x: [loaded([x])[1][0][name] for name in wrapper.output_names]
    return lambda x: list(loaded(x))


def verify(
    path: Path, run: Callable[[Tensor], list[Tensor]], wrapper: ExportWrapper, samples: Sequence[Tensor]
) -> list[Comparison]:
    with torch.no_grad():
        return [compare(path, x, run(x), wrapper(x)) for x in samples]


def export_model(
    model: nn.Module,
    output: Path,
    *,
    name: str,
    formats: Sequence[str] = ("onnx", "torchscript"),
    input_size: Sequence[int] = (224, 224),
    batch_size: int = 1,
    dynamic: bool = False,
    opset: int = 17,
    log: Callable[[str], None] = print,
) -> list[Comparison]:
    """Export ``model`` to ``output/<name>.onnx`` / ``.pt`` and verify each file; -> the comparisons."""
    model = model.eval()
    kind = model_kind(model)
    samples = sample_inputs(kind, batch_size, input_size, dynamic)
    if kind == "detection":
        opset = max(opset, 11)
        if dynamic:
            log("note: detectors export one image per call; only height and width are dynamic")
    wrapper = ExportWrapper(model, kind, output_names(model, kind, samples[0])).eval()
    output.mkdir(parents=True, exist_ok=True)
    results: list[Comparison] = []
    if "onnx" in formats:
        path = output / f"{name}.onnx"
        export_onnx(wrapper, samples[0], path, dynamic=dynamic, opset=opset)
        log(f"ONNX ({kind}, opset {opset}, outputs {list(wrapper.output_names)}): {path}")
        results += _report(verify(path, onnx_runner(path), wrapper, samples), log)
    if "torchscript" in formats:
        path = output / f"{name}.pt"
        how, reason = export_torchscript(wrapper, samples[0], path)
        if reason:
            log(f"torch.jit.script failed ({reason}); traced instead")
        log(f"TorchScript ({how}): {path}")
        results += _report(verify(path, torchscript_runner(path, wrapper, how), wrapper, samples), log)
    return results


def _report(comparisons: list[Comparison], log: Callable[[str], None]) -> list[Comparison]:
    for comparison in comparisons:
        log(str(comparison))
    return comparisons
