"""Face restoration: GFPGAN (GFPGANv1Clean) and CodeFormer loaded strictly from .safetensors in
their released key layouts (small channel counts; CodeFormer's fixed sizes checked on the meta
device), faces aligned to the template and pasted back, in txt2img and extras."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import save_file
from torch import nn

from sdcore.engine import face_archs as fa
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.face_restore import TEMPLATE_512, Face, FaceDetector, similarity
from sdcore.errors import InvalidInputError
from sdcore.guards import face_layouts
from sdcore.ports import EngineInputs, NetworkFile

from .support import Steps, gen


def gfpgan_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """GFPGAN v1.4's layout (sft_half, a latent per layer) at 64 px with few channels."""
    torch.manual_seed(seed)
    model = fa.GFPGAN([8, 8, 8, 4, 4], [16, 16, 16, 8, 8], 16, 2, True, True)
    return {k: torch.randn_like(v) * 0.2 for k, v in model.state_dict().items()}


def codeformer_state(
    nf: int = 32,
    mult: tuple[int, ...] = (1, 1, 1),
    dims: int = 32,
    connect: tuple[str, ...] = ("32", "64"),
) -> dict[str, torch.Tensor]:
    """CodeFormer's layout built block by block as its reference builds it (VQGAN encoder and
    generator, 2 ResBlocks per level, attention at 16 px), here at 64 px."""
    size = 16 * 2 ** (len(mult) - 1)
    enc: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
    res, c = size, nf
    for i, m in enumerate(mult):
        for _ in range(2):
            enc.append(fa._ResBlock(c, nf * m))
            c = nf * m
            if res == 16:
                enc.append(fa._AttnBlock(c))
        if i != len(mult) - 1:
            enc.append(fa._Resample(c, True))
            res //= 2
    enc += [fa._ResBlock(c, c), fa._AttnBlock(c), fa._ResBlock(c, c), fa._norm(c)]
    enc.append(nn.Conv2d(c, dims, 3, 1, 1))
    gen_: list[nn.Module] = [nn.Conv2d(dims, c, 3, 1, 1), fa._ResBlock(c, c), fa._AttnBlock(c)]
    gen_.append(fa._ResBlock(c, c))
    for i in reversed(range(len(mult))):
        for _ in range(2):
            gen_.append(fa._ResBlock(c, nf * mult[i]))
            c = nf * mult[i]
            if res == 16:
                gen_.append(fa._AttnBlock(c))
        if i != 0:
            gen_.append(fa._Resample(c, False))
            res *= 2
    gen_ += [fa._norm(c), nn.Conv2d(c, 3, 3, 1, 1)]
    root = nn.Module()
    root.encoder, root.generator = nn.Module(), nn.Module()
    root.encoder.blocks, root.generator.blocks = nn.ModuleList(enc), nn.ModuleList(gen_)
    root.quantize = fa._Codebook(16, dims)
    root.position_emb = nn.Parameter(torch.randn(256, dims))
    root.feat_emb = nn.Linear(dims, dims)
    root.ft_layers = nn.Sequential(fa._SALayer(dims, 2 * dims, 8))
    root.idx_pred_layer = nn.Sequential(nn.LayerNorm(dims), nn.Linear(dims, 16, bias=False))
    channels = {str(size // 2**i): nf * m for i, m in enumerate(mult)}
    root.fuse_convs_dict = nn.ModuleDict({k: fa._Fuse(channels[k]) for k in connect})
    return {k: v.detach().clone() for k, v in root.state_dict().items()}


def _file(tmp_path: Path, name: str, state: dict[str, torch.Tensor]) -> NetworkFile:
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    return NetworkFile(name, name.encode().hex().ljust(64, "0")[:64], path)


def test_gfpgan_layout_loads_strictly(tmp_path: Path) -> None:
    state = gfpgan_state()
    # GFPGANv1Clean's names, as its released files carry them
    assert {
        "conv_body_down.3.skip.weight",
        "conv_body_up.0.conv2.bias",
        "toRGB.3.weight",
        "condition_shift.2.2.weight",
        "stylegan_decoder.style_mlp.3.weight",
        "stylegan_decoder.style_conv1.modulated_conv.modulation.weight",
        "stylegan_decoder.style_convs.7.weight",
        "stylegan_decoder.to_rgbs.3.modulated_conv.weight",
        "stylegan_decoder.noises.noise8",
    } <= set(state)
    model = fa.load_face_restorer(_file(tmp_path, "gfpgan", state).path)
    assert isinstance(model, fa.GFPGAN) and model.size == 64
    out = model(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    # deterministic: the stored noise, not fresh noise
    x = torch.zeros(1, 3, 64, 64)
    assert torch.equal(model(x), model(x))


def test_codeformer_layout_loads_strictly(tmp_path: Path) -> None:
    model = fa.load_face_restorer(_file(tmp_path, "cf", codeformer_state()).path)
    assert isinstance(model, fa.CodeFormer) and model.size == 64
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        near, far = model(x, 1.0), model(x, 0.0)
    assert near.shape == (1, 3, 64, 64) and not torch.equal(near, far)  # the fusion acts


def test_codeformer_released_sizes_tap_the_reference_blocks() -> None:
    # the released model (512 px, 6 levels, 9 layers) built on the meta device: no memory
    with torch.device("meta"):
        state = codeformer_state(64, (1, 2, 2, 4, 4, 8), 256, ("32", "64", "128", "256"))
        state["position_emb"] = torch.empty(256, 512)
        model = fa.CodeFormer({**state, "feat_emb.weight": torch.empty(512, 256),
                               "ft_layers.0.linear1.weight": torch.empty(1024, 512)})  # fmt: skip
    assert model.size == 512
    assert face_layouts.layout_mismatch({k: list(v.shape) for k, v in state.items()}) is None
    # codeformer_arch's fuse_encoder_block / fuse_generator_block tables
    assert model._enc_taps == {2, 5, 8, 11, 14, 18}
    assert model._gen_taps == {6, 9, 12, 15, 18, 21}


@pytest.mark.parametrize("label", ["GFPGAN", "CodeFormer"])
def test_the_upload_check_expects_the_tensors_the_engine_loads(label: str) -> None:
    # the torch-free check at upload and the strict load agree on every name
    state = gfpgan_state() if label == "GFPGAN" else codeformer_state()
    shapes = {k: list(v.shape) for k, v in state.items()}
    assert face_layouts.architecture(shapes) == label
    assert face_layouts.layout_mismatch(shapes) is None
    victim = next(k for k in sorted(state) if ".2.bias" in k and "blocks" not in k)
    del shapes[victim]
    assert f"missing {victim}" in (face_layouts.layout_mismatch(shapes) or "")


@pytest.mark.parametrize("change", ["drop", "add", "rename"])
def test_a_wrong_layout_is_refused_naming_the_keys(tmp_path: Path, change: str) -> None:
    state = gfpgan_state()
    if change == "drop":
        del state["toRGB.1.bias"]
        named = "toRGB.1.bias"
    elif change == "add":
        state["toRGB.9.weight"] = torch.zeros(3, 4, 1, 1)
        named = "toRGB.9.weight"
    else:
        state = {k.replace("stylegan_decoder.", "decoder."): v for k, v in state.items()}
        named = "decoder.constant_input.weight"
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        fa.load_face_restorer(_file(tmp_path, "bad", state).path)


def test_similarity_recovers_a_rotation_scale_and_shift() -> None:
    angle, scale, shift = 0.3, 0.5, np.array([10.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = TEMPLATE_512 @ rot.T + shift
    matrix = similarity(TEMPLATE_512, dst)
    assert np.allclose(matrix[:, :2], rot) and np.allclose(matrix[:, 2], shift)


class OneFace(FaceDetector):
    """A detector double: one face at a chosen box, landmarks placed as the template's."""

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        self.box = box
        self.calls = 0

    def detect(self, image: Image.Image) -> list[Face]:
        self.calls += 1
        x0, y0, x1, y1 = self.box
        points = TEMPLATE_512 / 512 * (x1 - x0) + (x0, y0)
        return [Face(self.box, tuple((float(x), float(y)) for x, y in points))]


def _picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(60, 200, (128, 128, 3), dtype=np.uint8))


@pytest.fixture
def with_detector(engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch) -> OneFace:
    detector = OneFace((32, 32, 96, 96))
    monkeypatch.setattr(engine._faces, "detector", detector)
    return detector


@pytest.mark.parametrize("label", ["GFPGAN", "CodeFormer"])
def test_extras_restores_the_face_and_leaves_the_rest(
    engine: DiffusersEngine, with_detector: OneFace, tmp_path: Path, label: str
) -> None:
    state = gfpgan_state() if label == "GFPGAN" else codeformer_state()
    file = _file(tmp_path, label, state)
    field = f"{label.lower()}_visibility"
    params = gen(kind="extras", upscaler="None", face_restorers=[(label, 1.0)])
    inputs = EngineInputs(init_images=[_picture()], face_restorers={label: file})
    result = engine.run(params, inputs, Steps())
    out, source = np.asarray(result.images[0]).astype(int), np.asarray(_picture()).astype(int)
    assert with_detector.calls == 1 and out.shape == source.shape
    assert np.abs(out[48:80, 48:80] - source[48:80, 48:80]).mean() > 5  # the face changed
    assert np.array_equal(out[:16, :16], source[:16, :16])  # far from it, untouched
    assert f"{label} visibility: 1" in result.infotexts[0], field
    # half visibility: halfway between the input and the fully restored picture
    half = params.model_copy(update={"face_restorers": [(label, 0.5)]})
    blended = np.asarray(engine.run(half, inputs, Steps()).images[0]).astype(int)
    assert np.abs(blended - (out + source) / 2).max() <= 1


def test_txt2img_restores_each_picture_after_decoding(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    detector = OneFace((16, 16, 48, 48))
    monkeypatch.setattr(engine._faces, "detector", detector)
    file = _file(tmp_path, "cf", codeformer_state())
    plain = engine.run(gen(batch_size=2), EngineInputs(), Steps())
    params = gen(batch_size=2, face_restorers=[("CodeFormer", 1.0)], codeformer_weight=0.7)
    restored = engine.run(params, EngineInputs(face_restorers={"CodeFormer": file}), Steps())
    assert detector.calls == 2
    for a, b in zip(plain.images, restored.images, strict=True):
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    assert "Face restoration: CodeFormer" in restored.infotexts[0]
    assert restored.info["restore_faces"] is True and plain.info["restore_faces"] is False
    assert "Face restoration" not in plain.infotexts[0]


def test_without_a_detector_the_field_is_named(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine._faces, "detector", None)
    monkeypatch.setattr(engine._faces, "_find", lambda: None)  # the shipped one not installed
    file = _file(tmp_path, "cf", codeformer_state())
    params = gen(face_restorers=[("CodeFormer", 1.0)])
    with pytest.raises(InvalidInputError) as err:
        engine.run(params, EngineInputs(face_restorers={"CodeFormer": file}), Steps())
    assert err.value.field == "restore_faces"


def test_a_file_of_another_layout_fails_naming_the_field(
    engine: DiffusersEngine, with_detector: OneFace, tmp_path: Path
) -> None:
    file = _file(tmp_path, "odd", {"conv_first.weight": torch.zeros(4, 3, 3, 3)})
    params = gen(kind="extras", upscaler="None", face_restorers=[("GFPGAN", 1.0)])
    inputs = EngineInputs(init_images=[_picture()], face_restorers={"GFPGAN": file})
    with pytest.raises(InvalidInputError, match=r"unexpected conv_first\.weight") as err:
        engine.run(params, inputs, Steps())
    assert err.value.field == "gfpgan_visibility"


def _drawn_face() -> Image.Image:
    """A cartoon face: skin oval, eyes with pupils at (53, 54) and (75, 54), nose, mouth."""
    image = Image.new("RGB", (128, 128), (90, 110, 140))
    draw = ImageDraw.Draw(image)
    draw.ellipse((34, 20, 94, 104), fill=(224, 180, 150))
    for x in (47, 69):
        draw.ellipse((x, 50, x + 12, 58), fill=(255, 255, 255))
        draw.ellipse((x + 3, 51, x + 9, 57), fill=(60, 40, 30))
    draw.line((45, 45, 60, 44), fill=(90, 60, 40), width=2)
    draw.line((68, 44, 83, 45), fill=(90, 60, 40), width=2)
    draw.polygon([(64, 58), (59, 74), (69, 74)], fill=(200, 150, 125))
    draw.chord((52, 78, 76, 92), 0, 180, fill=(170, 70, 70))
    return image.filter(ImageFilter.GaussianBlur(1))


@pytest.fixture
def shipped_detector() -> Iterator[FaceDetector]:
    pytest.importorskip("mediapipe.tasks.python.vision")
    from sdcore.engine.face_detect import MODEL_FILE, MediapipeFaceDetector

    if not MODEL_FILE.is_file():
        pytest.skip("the face detection model is fetched by `make install`")
    detector = MediapipeFaceDetector()
    yield detector
    detector.close()


def test_the_shipped_detector_finds_a_drawn_face(shipped_detector: FaceDetector) -> None:
    faces = shipped_detector.detect(_drawn_face())
    assert len(faces) == 1
    (lx, ly), (rx, ry) = faces[0].landmarks[:2]
    assert abs(lx - 53) < 5 and abs(rx - 75) < 5 and abs(ly - 54) < 5 and abs(ry - 54) < 5
    assert shipped_detector.detect(Image.new("RGB", (128, 128), (90, 110, 140))) == []


def test_the_shipped_detector_finds_small_faces_in_tiles(shipped_detector: FaceDetector) -> None:
    # two faces of 48 and 96 px in a 512x384 picture: too small for the detector's 128x128
    # view of the whole, found in its tiles, each once
    picture = Image.new("RGB", (512, 384), (90, 110, 140))
    picture.paste(_drawn_face().resize((48, 48)), (40, 300))
    picture.paste(_drawn_face().resize((96, 96)), (360, 60))
    faces = shipped_detector.detect(picture)
    assert len(faces) == 2
    big, small = ((f.box[0] + f.box[2]) / 2 for f in faces), faces[1].box
    assert abs(next(big) - 408) < 8 and abs(next(big) - 64) < 8  # largest first
    assert 40 <= small[0] < small[2] <= 88 and 300 <= small[1] < small[3] <= 348


def test_detection_tiles_cover_the_picture_down_to_the_detectors_size() -> None:
    from sdcore.engine.face_detect import tiles

    assert tiles(128, 128) == [(0, 0, 128, 128)]
    boxes = tiles(512, 384)
    assert boxes[0] == (0, 0, 512, 384) and {b[2] - b[0] for b in boxes[1:]} == {384, 192, 128}
    assert all(b[2] <= 512 and b[3] <= 384 for b in boxes)
    assert (512 - 128, 384 - 128, 512, 384) in boxes  # the last tiles flush with the edges


def test_extras_restores_a_drawn_face_with_the_shipped_detector(
    engine: DiffusersEngine,
    shipped_detector: FaceDetector,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(engine._faces, "detector", shipped_detector)
    file = _file(tmp_path, "GFPGAN", gfpgan_state())
    params = gen(kind="extras", upscaler="None", face_restorers=[("GFPGAN", 1.0)])
    picture = Image.new("RGB", (256, 256), (90, 110, 140))
    picture.paste(_drawn_face(), (64, 64))
    inputs = EngineInputs(init_images=[picture], face_restorers={"GFPGAN": file})
    out = np.asarray(engine.run(params, inputs, Steps()).images[0]).astype(int)
    source = np.asarray(picture).astype(int)
    assert np.abs(out[114:144, 114:144] - source[114:144, 114:144]).mean() > 5  # the face
    assert np.array_equal(out[:24, :24], source[:24, :24])  # far from it, untouched


def test_the_infotext_names_the_restorer_where_the_webui_does() -> None:
    from sdcore.webui.infotext import generation_infotext

    text = generation_infotext(
        gen(face_restorers=[("CodeFormer", 1.0)]), seed=5, subseed=0, width=64, height=64,
        model_name="m", model_hash="h", sampler="Euler", schedule="Automatic",
    )  # fmt: skip
    assert ", Seed: 5, Face restoration: CodeFormer, Size: 64x64," in text
