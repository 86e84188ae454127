import inspect
import os

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from segmentation import model_catalog
from segmentation.errors import UserError
from segmentation.models import (
    ARCHITECTURES,
    ENCODER_ALIASES,
    ENCODERS,
    architecture_options,
    build_model,
    encoder_normalization,
    required_input_multiple,
    set_encoder_trainable,
)

NUM_CLASSES = 3


# Tiny inputs gain nothing from intra-op threads, and on a shared CPU the idle threads'
# spin-waiting made this file 3x slower.
pytestmark = pytest.mark.usefixtures("one_thread")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The meta device builds the big models without allocating or initializing their weights.
@pytest.mark.parametrize(
    "arch, options, expected",
    [
        ("fpn", {}, 25_588_808),
        ("unet", {"residual_decoder": False}, 58_111_560),
        ("unet", {"residual_decoder": True}, 69_034_568),
    ],
)
def test_parameter_counts_are_those_of_models_md(arch, options, expected):
    with torch.device("meta"):
        model = build_model(arch, "resnext50", 8, **options)
    assert count(model) == expected


def test_fpn_has_exactly_the_parameters_of_smp_fpn():
    with torch.device("meta"):
        ours = build_model("fpn", "resnext50_32x4d", 8)
        theirs = smp.FPN("resnext50_32x4d", encoder_weights=None, classes=8)
    assert count(ours) == count(theirs)
    assert count(ours.encoder) == count(theirs.encoder)


def test_every_module_is_registered_once_and_the_classifier_is_absent():
    model = build_model("unet", "resnet18", NUM_CLASSES)
    with_duplicates = list(model.named_modules(remove_duplicate=False))
    assert len(with_duplicates) == len(list(model.named_modules()))
    names = {name.split(".")[-1] for name, _ in with_duplicates}
    assert not names & {"fc", "avgpool"}


def test_encoder_variants_and_normalization():
    assert ENCODER_ALIASES == {"resnext50": "resnext50_32x4d", "resnext101": "resnext101_32x8d"}
    assert ENCODERS["resnet34"].channels == (64, 128, 256, 512)
    assert ENCODERS["resnext101_32x8d"].channels == (256, 512, 1024, 2048)
    mean, std = encoder_normalization("resnext50")
    assert mean == pytest.approx((0.485, 0.456, 0.406))
    assert std == pytest.approx((0.229, 0.224, 0.225))
    assert required_input_multiple("unet") == 64
    assert required_input_multiple("fpn") == 32


class ModelContract:
    """What every architecture must do; subclasses set `arch` and `options`."""

    arch = ""
    options: dict = {}

    def build(self, backbone="resnet18", **kwargs):
        torch.manual_seed(0)
        return build_model(self.arch, backbone, NUM_CLASSES, **self.options, **kwargs)

    @pytest.mark.parametrize("backbone, size", [("resnet18", (64, 128)), ("resnet50", (64, 64))])
    def test_logits_have_the_input_size(self, backbone, size):
        model = self.build(backbone).eval()
        with torch.no_grad():
            logits = model(torch.randn(1, 3, *size))
        assert logits.shape == (1, NUM_CLASSES, *size)

    def test_every_parameter_gets_a_finite_gradient(self):
        model = self.build().train()
        logits = model(torch.randn(2, 3, 64, 64))
        nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
        assert torch.isfinite(logits).all()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            if parameter.ndim > 1:  # weights; a bias just before a norm may get ~0
                assert parameter.grad.abs().sum() > 0, name

    def test_other_input_channels_go_through_a_1x1_channel_tuner(self):
        model = self.build(in_channels=5).eval()
        assert model.channel_tuner.in_channels == 5
        with torch.no_grad():
            logits = model(torch.randn(1, 5, 64, 64))
        assert logits.shape == (1, NUM_CLASSES, 64, 64)
        with pytest.raises(UserError, match=r"\(B, 5, H, W\)"):
            model(torch.randn(1, 3, 64, 64))

    def test_bad_input_size_names_the_nearest_valid_sizes(self):
        model = self.build().eval()
        m = required_input_multiple(self.arch)
        with pytest.raises(UserError) as error:
            model(torch.randn(1, 3, m + 1, 3 * m - 1))
        assert f"is not a multiple of {m} for {self.arch}" in str(error.value)
        assert f"use {m}x{2 * m} or {2 * m}x{3 * m}" in str(error.value)

    def test_channels_last_gives_the_same_logits(self):
        model = self.build().eval()
        images = torch.randn(1, 3, 64, 128)
        with torch.no_grad():
            expected = model(images)
            model.to(memory_format=torch.channels_last)
            actual = model(images.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)

    def test_frozen_encoder_gets_no_gradient_and_keeps_its_statistics(self):
        model = self.build(in_channels=4)
        set_encoder_trainable(model, False)
        model.train()  # the training loop calls this every epoch: the freeze must survive it
        bn = model.encoder.bn1
        assert not bn.training and model.training
        running_mean = bn.running_mean.clone()
        model(torch.randn(2, 4, 64, 64)).sum().backward()
        assert all(p.grad is None for p in model.encoder.parameters())
        assert model.channel_tuner.weight.grad is not None
        assert torch.equal(bn.running_mean, running_mean)

        set_encoder_trainable(model, True)
        assert bn.training
        assert all(p.requires_grad for p in model.parameters())

    def test_state_dict_round_trip(self):
        model = self.build().eval()
        # Every float parameter and buffer (BatchNorm statistics too, which every seed sets to
        # 0 and 1) moved off its initial value, and the copy from another seed: before loading,
        # the copy differs in every float entry, so only a load that works makes it equal.
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    noise = 0.01 + torch.rand(tensor.shape, generator=generator)
                    tensor.mul_(1 + 0.1 * noise).add_(0.001 * noise)
        torch.manual_seed(1)
        copy = build_model(self.arch, "resnet18", NUM_CLASSES, **self.options).eval()
        expected = model.state_dict()
        for key, tensor in copy.state_dict().items():
            if tensor.is_floating_point():
                assert not torch.equal(tensor, expected[key]), key
        images = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            before = copy(images)

        copy.load_state_dict(expected)
        found = copy.state_dict()
        assert found.keys() == expected.keys()
        for key, tensor in expected.items():
            assert torch.equal(found[key], tensor), key
        with torch.no_grad():
            logits = model(images)
            torch.testing.assert_close(copy(images), logits)
        assert not torch.allclose(before, logits)


class TestUNet(ModelContract):
    arch = "unet"


class TestUNetResidual(ModelContract):
    arch = "unet"
    options = {"residual_decoder": True, "dropout": 0.0}


class TestFPN(ModelContract):
    arch = "fpn"


class TestFPNCat(ModelContract):
    arch = "fpn"
    options = {"merge": "cat", "pyramid_channels": 64, "segmentation_channels": 32}


class TestFPNSemanticFPN(ModelContract):
    arch = "fpn"
    options = {
        "pyramid_smoothing": True,
        "branch_norm": "batch",
        "dropout": 0.1,
        "align_corners": False,
        "pyramid_channels": 64,
        "segmentation_channels": 32,
    }


SEMANTIC_FPN = {"pyramid_smoothing": True, "branch_norm": "batch", "dropout": 0.1}


def test_semantic_fpn_has_the_parameters_of_mmsegmentations_neck_and_head():
    # Counted by hand from mmsegmentation's FPN neck and FPNHead for ResNet-50, 19 classes:
    # laterals (1x1, bias) 256 x (256 + 512 + 1024 + 2048 + 4)       =   984,064
    # FPN output convolutions (3x3, bias) 4 x (256 x 256 x 9 + 256)   = 2,360,320
    # scale heads: 7 ConvModules (3x3, no bias, BN) with 1, 1, 2 and 3 per level:
    #   4 x (256 x 128 x 9 + 256) + 3 x (128 x 128 x 9 + 256)          = 1,623,808
    # conv_seg (1x1, bias) 128 x 19 + 19                              =     2,451
    with torch.device("meta"):
        model = build_model("fpn", "resnet50", 19, **SEMANTIC_FPN, align_corners=False)
    assert count(model.encoder) == 23_508_032  # torchvision's ResNet-50 without its fc
    assert count(model) - count(model.encoder) == 984_064 + 2_360_320 + 1_623_808 + 2_451


def conv_module(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """mmcv's ConvModule (3x3 conv without bias, BN in eval, ReLU), from the block's tensors."""
    norm = block.norm
    x = F.conv2d(x, block.conv.weight, padding=1)
    x = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps)
    return F.relu(x)


def test_semantic_fpn_computes_mmsegmentations_neck_and_head():
    """The forward, written out as mmsegmentation's FPN.forward and FPNHead.forward compute it
    (top-down on the unsmoothed laterals, nearest by size; a 3x3 output convolution per level;
    scale heads of ConvModule + bilinear x2 without corner alignment; the sum; Dropout2d and
    conv_seg; the logits resized to the input), on the model's own tensors in eval mode."""
    torch.manual_seed(0)
    model = build_model("fpn", "resnet18", 5, **SEMANTIC_FPN, align_corners=False)
    for module in model.modules():  # running statistics other than 0 and 1, to be used
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = model.encode(image)  # strides 4, 8, 16, 32
        laterals = [
            F.conv2d(c, conv.weight, conv.bias)
            for c, conv in zip(
                features, (model.lateral2, model.lateral3, model.lateral4, model.lateral5)
            )
        ]
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        # model.smoothing and model.branches are ordered p5..p2; mmsegmentation's p2..p5.
        smoothing = list(model.smoothing)[::-1]
        outs = [
            F.conv2d(x, conv.weight, conv.bias, padding=1) for x, conv in zip(laterals, smoothing)
        ]
        branches = list(model.branches)[::-1]
        output = None
        for level, (x, branch) in enumerate(zip(outs, branches)):
            for block in branch:
                x = conv_module(x, block)
                if level > 0:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            output = x if output is None else output + x
        logits = F.conv2d(output, model.classifier.weight, model.classifier.bias)
        expected = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
        ours = model(image)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_semantic_fpn_under_sync_batchnorm_has_no_group_norm_left():
    model = build_model("fpn", "resnet18", 3, **SEMANTIC_FPN)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert not any(isinstance(m, nn.GroupNorm) for m in converted.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.branches.modules()) == 7


def test_fpn_at_stride_4_when_asked():
    model = build_model("fpn", "resnet18", NUM_CLASSES, final_upsampling=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, NUM_CLASSES, 16, 24)


def resnet_state_dict(name: str) -> dict:
    torch.manual_seed(1)
    return getattr(torchvision.models, name)(weights=None).state_dict()


def test_local_torchvision_weights_load_into_the_encoder(tmp_path):
    state_dict = resnet_state_dict("resnet18")  # a full classifier state_dict, fc included
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict, path)
    # Wrapped by a training script, and as old as torchvision's 2017 checkpoints (no
    # num_batches_tracked).
    old_style = {k: v for k, v in state_dict.items() if "num_batches_tracked" not in k}
    torch.save({"state_dict": old_style, "epoch": 3}, tmp_path / "wrapped.pth")
    for file in (path, tmp_path / "wrapped.pth"):
        model = build_model("fpn", "resnet18", NUM_CLASSES, pretrained=str(file))
        loaded = model.encoder.state_dict()
        assert set(loaded) == {k for k in state_dict if not k.startswith("fc.")}
        for key, tensor in loaded.items():
            assert torch.equal(tensor, state_dict[key]), key


def test_weights_of_another_backbone_are_refused_with_the_mismatches(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(resnet_state_dict("resnet34"), path)
    with pytest.raises(UserError, match=r"unexpected keys: layer1\.2\.conv1\.weight"):
        build_model("unet", "resnet18", NUM_CLASSES, pretrained=path)

    state_dict = resnet_state_dict("resnet18")
    state_dict["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    del state_dict["layer4.1.bn2.bias"]
    torch.save(state_dict, path)
    with pytest.raises(UserError) as error:
        build_model("unet", "resnet18", NUM_CLASSES, pretrained=path)
    message = str(error.value)
    assert "shape mismatch: conv1.weight expected (64, 3, 7, 7) found (64, 4, 7, 7)" in message
    assert "missing keys: layer4.1.bn2.bias" in message


def test_missing_or_unreadable_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_model("fpn", "resnet18", NUM_CLASSES, pretrained=tmp_path / "nope.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not read"):
        build_model("fpn", "resnet18", NUM_CLASSES, pretrained=tmp_path / "notes.txt")
    with pytest.raises(UserError, match="pretrained must be null"):
        build_model("fpn", "resnet18", NUM_CLASSES, pretrained=True)


def test_failed_imagenet_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        build_model("fpn", "resnet18", NUM_CLASSES, pretrained="imagenet")
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message
    assert os.path.join(str(tmp_path), "hub", "checkpoints") in message
    assert "pretrained: null" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs, valid_names",
    [
        ({"arch": "deeplab"}, "unet, fpn"),
        ({"backbone": "vgg16"}, "resnet18, resnet34"),
        ({"arch": "fpn", "num_filters": 16}, ", ".join(architecture_options("fpn"))),
        ({"arch": "fpn", "merge": "max"}, "add, cat"),
        ({"arch": "fpn", "branch_norm": "instance"}, "group, batch"),
    ],
)
def test_unknown_names_list_the_valid_ones(kwargs, valid_names):
    arguments = {"arch": "unet", "backbone": "resnet18", "num_classes": 2, **kwargs}
    with pytest.raises(UserError, match=valid_names):
        build_model(**arguments)


def test_unet_options_are_the_documented_ones():
    assert architecture_options("unet") == {
        "num_filters": 32,
        "residual_decoder": False,
        "dropout": 0.2,
    }


@pytest.mark.parametrize("arch", model_catalog.ARCHITECTURES)
def test_the_catalog_names_each_architectures_options_and_defaults(arch):
    """The config checks model.options against the torch-free catalog: it must say what the
    model class itself accepts, name for name and default for default."""
    parameters = inspect.signature(ARCHITECTURES[arch]).parameters.values()
    keyword_only = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert model_catalog.ARCHITECTURE_OPTIONS[arch] == keyword_only
    assert list(model_catalog.ARCHITECTURE_OPTIONS[arch]) == list(keyword_only)


def test_the_catalog_names_the_architectures_and_backbones_that_exist():
    assert set(model_catalog.ARCHITECTURES) == set(ARCHITECTURES)
    assert tuple(ENCODERS) == model_catalog.BACKBONES
    assert all(name in ENCODERS for name in model_catalog.BACKBONE_ALIASES.values())
    assert model_catalog.backbone_names() == [*ENCODERS, *ENCODER_ALIASES]


def test_fpn_checkpoints_that_name_the_classifier_head_still_load():
    model = build_model("fpn", "resnet18", 3, pyramid_channels=32, segmentation_channels=32)
    older = {
        key.replace("classifier.", "head.", 1): torch.full_like(value, 0.5)
        if key.startswith("classifier.")
        else value
        for key, value in model.state_dict().items()
    }
    assert "head.weight" in older and "classifier.weight" not in older
    fresh = build_model("fpn", "resnet18", 3, pyramid_channels=32, segmentation_channels=32)
    fresh.load_state_dict(older)  # strict: every key accounted for
    assert torch.equal(fresh.classifier.weight, torch.full_like(fresh.classifier.weight, 0.5))
