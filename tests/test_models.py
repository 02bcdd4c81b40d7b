"""Every built-in model builds from the data it gets, trains a step, and exposes representations."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.configs import ConfigError
from nntransfer.dataset import image_dataset_loader
from nntransfer.models import MODELS, capture, classification_model_builder, data_info

DIGITS = image_dataset_loader(seed=1, dataset_cls="digits", batch_size=4)


def rgb32(num_classes=7):
    x = torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % num_classes
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


def forward_backward(model, loaders):
    x, y = next(iter(next(iter(loaders["train"].values()))))[:2]
    out = model(x[:2])
    torch.nn.functional.cross_entropy(out, y[:2]).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return out


# every built-in name (registered or not yet imported: the registry imports a built-in's module on first use);
# iterating MODELS itself gives only the imported ones, which at collection time was none: the test ran nothing
BUILT_IN_MODELS = [name for name in MODELS.names() if not name.endswith("<name>")]


def test_the_model_list_is_the_registrys_built_ins():
    assert {"lenet", "mlp", "resnet18", "resnet152", "vgg11", "vgg19_bn"} <= set(BUILT_IN_MODELS)


@pytest.mark.parametrize("name", BUILT_IN_MODELS)
def test_every_model_builds_from_digits_and_from_rgb32(name):
    digits = classification_model_builder(DIGITS, seed=1, type=name)
    assert forward_backward(digits, DIGITS).shape == (2, 10)
    rgb = classification_model_builder(rgb32(), seed=1, type=name)
    assert forward_backward(rgb, rgb32()).shape == (2, 7)  # classes read from the labels


def test_seeded_initialisation_and_dropout_option():
    a = classification_model_builder(DIGITS, seed=1, type="lenet")
    b = classification_model_builder(DIGITS, seed=1, type="lenet")
    c = classification_model_builder(DIGITS, seed=2, type="lenet")
    assert torch.equal(a.core[0].weight, b.core[0].weight) and not torch.equal(a.core[0].weight, c.core[0].weight)
    assert classification_model_builder(DIGITS, seed=1, type="lenet", dropout=0.5).readout[3].p == 0.5


def test_data_info_reads_shape_and_classes():
    info = data_info(DIGITS)
    assert (info.channels, info.height, info.width, info.num_classes) == (1, 8, 8, 10)
    filtered = image_dataset_loader(seed=1, dataset_cls="digits", filter_classes=[5, 6])
    assert data_info(filtered).num_classes == 10  # labels keep their meaning: heads match across steps


def test_documented_representation_shapes():
    x = next(iter(DIGITS["train"]["img_classification"]))[0]
    lenet = classification_model_builder(DIGITS, seed=1, type="lenet")
    with capture(lenet, ["core", "readout.1", "readout.4"]) as reps:
        out = lenet(x)
    assert reps["core"].shape == (4, 16, 2, 2) and reps["readout.1"].shape == (4, 120)
    assert reps["readout.4"].shape == (4, 84) and out.shape == (4, 10)
    resnet = classification_model_builder(rgb32(), seed=1, type="resnet18")
    with capture(resnet, ["layer1", "layer4", "avgpool"]) as reps:
        resnet(torch.randn(2, 3, 32, 32))
    assert reps["layer1"].shape == (2, 64, 32, 32) and reps["layer4"].shape == (2, 512, 4, 4)
    assert reps["avgpool"].shape == (2, 512, 1, 1)
    with pytest.raises(KeyError, match="no layer"):
        with capture(lenet, ["nope"]):
            pass
    plain = lenet(x)
    with capture(lenet, ["core"]):
        assert torch.equal(lenet(x), plain)  # capturing leaves the output unchanged


def test_torchvision_models_by_name_and_local_weights(tmp_path):
    import torchvision

    model = classification_model_builder(rgb32(), seed=1, type="torchvision.resnet18")
    assert forward_backward(model, rgb32()).shape == (2, 7)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    loaded = classification_model_builder(rgb32(), seed=1, type="torchvision.resnet18", weights_path=str(weights))
    reference = torch.load(weights, weights_only=True)
    assert torch.equal(loaded.conv1.weight, reference["conv1.weight"])
    assert loaded.fc.out_features == 7  # head replaced for this data
    with pytest.raises(ConfigError, match="3 input channels"):
        classification_model_builder(DIGITS, seed=1, type="torchvision.resnet18")
    with pytest.raises(ConfigError, match="unknown model type"):
        classification_model_builder(DIGITS, seed=1, type="lenet6")


def test_more_documented_shapes_and_options(tmp_path):
    loaders = rgb32()
    vgg = classification_model_builder(loaders, seed=1, type="vgg11_bn", dropout=0.3)
    with capture(vgg, ["features", "avgpool", "classifier.1"]) as reps:
        out = vgg(torch.randn(2, 3, 32, 32))
    assert reps["features"].shape == (2, 512, 1, 1) and reps["avgpool"].shape == (2, 512, 1, 1)
    assert reps["classifier.1"].shape == (2, 512) and out.shape == (2, 7)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in vgg.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d)
                   for m in classification_model_builder(loaders, seed=1, type="vgg11").modules())
    mlp = classification_model_builder(DIGITS, seed=1, type="mlp", hidden_sizes=[32, 16])
    with capture(mlp, ["1", "4"]) as reps:
        mlp(torch.randn(3, 1, 8, 8))
    assert reps["1"].shape == (3, 32) and reps["4"].shape == (3, 16)
    imagenet_stem = classification_model_builder(loaders, seed=1, type="resnet18", cifar_stem=False)
    with capture(imagenet_stem, ["layer1", "layer4"]) as reps:
        imagenet_stem(torch.randn(2, 3, 64, 64))  # adaptive pooling: a larger input still works
    assert reps["layer1"].shape == (2, 64, 16, 16) and reps["layer4"].shape == (2, 512, 2, 2)
    with pytest.raises(ConfigError, match="weights_path .* does not exist"):
        classification_model_builder(loaders, seed=1, type="torchvision.resnet18", weights_path=str(tmp_path / "no.pt"))


def test_builds_from_in_memory_loaders_and_torchvision_dropout():
    fast = image_dataset_loader(seed=1, dataset_cls="digits", batch_size=4, in_memory=True, channels=3)
    assert data_info(fast) == data_info(image_dataset_loader(seed=1, dataset_cls="digits", channels=3))
    model = classification_model_builder(fast, seed=1, type="lenet")
    assert forward_backward(model, fast).shape == (2, 10) and model.core[0].in_channels == 3
    tv = classification_model_builder(rgb32(), seed=1, type="torchvision.resnet18", dropout=0.25)
    assert isinstance(tv.fc[0], torch.nn.Dropout) and tv.fc[0].p == 0.25 and tv.fc[1].out_features == 7


def test_lenet_learns_digits_from_the_in_memory_path():
    loaders = image_dataset_loader(seed=1, dataset_cls="digits", batch_size=32, in_memory=True)
    model = classification_model_builder(loaders, seed=1, type="lenet")
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(4):
        torch.manual_seed(epoch)
        for x, y in loaders["train"]["img_classification"]:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    test = loaders["test"]["img_classification"]
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    assert correct / len(test.dataset) > 0.9
