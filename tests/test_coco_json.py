"""A user's own COCO-format dataset by paths (``data.dataset=coco_json``): loading, one-line errors, the
augmentation chosen by ``data.augmentation`` at sizes relative to ``data.image_size``, ``model.num_classes``
derived from the categories, box-only pretraining on it, ``groupdetr derive`` output read by paths, and a
smoke training through the CLI. Also that none of it changes what the measured presets do."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from groupdetr import names
from groupdetr.cli import main
from groupdetr.config import ConfigError, load_config, to_dict
from groupdetr.data import DatasetError, build_dataset
from groupdetr.data.coco import CocoDetection, dataset_paths, derived_num_classes, resolve_num_classes
from groupdetr.data.derive import derive_dataset, derived_overrides
from groupdetr.data.transforms import (PAPER_MAX_SIZE, PAPER_SCALES, SYNTH_SCALE_JITTER, Compose, RandomHorizontalFlip,
                                       RandomResize, RandomSelect, RandomSizeCrop, Resize, build_transforms, paper_size)
from groupdetr.pretrain.cache import PRETEXT_VERSION, cache_key, dataset_fingerprint, pretrain_spec
from groupdetr.synth.writer import generate
from conftest import TINY

# ---------------------------------------------------------------------------------------------
# a user's dataset, written by hand: box-only, categories 1 and 3, folders named as a user names them


def write_user_dataset(root: Path, sizes=((60, 80), (90, 70)), edit=None) -> dict[str, Path]:
    """Two splits in folders of the user's choosing; images of (h, w) ``sizes``; returns the four paths."""
    rng = np.random.default_rng(0)
    paths = {}
    for split in ("train", "val"):
        images = root / "pictures" / f"{split}_set"
        images.mkdir(parents=True)
        records, anns = [], []
        for i, (h, w) in enumerate(sizes, 1):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.jpg.png")
            records.append({"id": i, "file_name": f"img{i}.jpg.png", "width": w, "height": h})
            for j, cat in enumerate((1, 3)):
                anns.append({"id": 10 * i + j, "image_id": i, "category_id": cat, "bbox": [5 + 20 * j, 6, 15, 20],
                             "area": 300, "iscrowd": 0})
        data = {"images": records, "annotations": anns,
                "categories": [{"id": 1, "name": "car"}, {"id": 3, "name": "tree"}]}
        if edit is not None:
            edit(split, data)
        ann = root / "labels" / f"{split}.json"
        ann.parent.mkdir(exist_ok=True)
        ann.write_text(json.dumps(data))
        paths[f"{split}_images"], paths[f"{split}_annotations"] = images, ann
    return paths


def by_paths(paths: dict, *extra: str) -> list[str]:
    return [f"data.{k}={v}" for k, v in paths.items()] + list(extra)


def assert_one_line(message: str, *parts: str) -> None:
    assert "\n" not in message.strip(), message
    for p in parts:
        assert p in message, f"{p!r} not in {message!r}"


@pytest.fixture
def user(tmp_path):
    return write_user_dataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# loading by paths


def test_a_dataset_is_read_from_its_four_paths(user):
    cfg = load_config("own_dataset", by_paths(user, "data.image_size=64"))
    assert cfg.data.dataset == names.BY_PATHS and cfg.model.num_classes is None and cfg.data.root is None
    cfg = resolve_num_classes(cfg)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (train.image_dir, train.ann_file) == (user["train_images"], user["train_annotations"])
    assert (val.image_dir, val.ann_file) == (user["val_images"], user["val_annotations"])
    assert len(train) == len(val) == 2 and train.category_ids == [1, 3]
    _, target = val[0]
    assert target["labels"].tolist() == [1, 3] and min(target["size"].tolist()) == 64


def test_relative_paths_are_relative_to_the_working_directory(user, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = {k: v.relative_to(tmp_path) for k, v in user.items()}
    assert not any(v.is_absolute() for v in relative.values())
    cfg = load_config("own_dataset", by_paths(relative, "model.num_classes=4"))
    assert len(build_dataset(cfg, "val")) == 2


@pytest.mark.parametrize("key", ["train_images", "train_annotations", "val_images", "val_annotations"])
def test_a_missing_path_or_key_is_one_line_naming_the_key(user, tmp_path, key):
    split = key.split("_")[0]
    moved = dict(user, **{key: tmp_path / "nowhere" / user[key].name})
    with pytest.raises(DatasetError) as err:
        build_dataset(load_config("own_dataset", by_paths(moved, "model.num_classes=4")), split)
    assert_one_line(str(err.value), f"data.{key}", "nowhere", "not found")
    unset = {k: v for k, v in user.items() if k != key}
    with pytest.raises(DatasetError) as err:
        build_dataset(load_config("own_dataset", by_paths(unset, "model.num_classes=4")), split)
    assert_one_line(str(err.value), f"data.{key} is not set")


def test_a_malformed_annotation_file_is_one_line_naming_it(user):
    user["train_annotations"].write_text('{"images": [\n {"id": 1,,')
    cfg = load_config("own_dataset", by_paths(user))
    for call in (lambda: resolve_num_classes(cfg), lambda: build_dataset(cfg, "train")):
        with pytest.raises(DatasetError) as err:
            call()
        assert_one_line(str(err.value), str(user["train_annotations"]), "malformed JSON", "line 2")
    user["train_annotations"].write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError) as err:
        resolve_num_classes(cfg)
    assert_one_line(str(err.value), str(user["train_annotations"]), "categories")


def test_location_keys_a_dataset_would_not_read_are_refused(user):
    with pytest.raises(ConfigError, match=r"^data.train_images is read only with data.dataset=coco_json"):
        load_config("cpu_small", [f"data.train_images={user['train_images']}"])
    with pytest.raises(ConfigError, match=r"^data.root is not read with data.dataset=coco_json.*set data.root=null"):
        load_config("cpu_small", ["data.dataset=coco_json"])
    with pytest.raises(ConfigError, match="pretrain.dataset=coco_json needs pretrain.train_images"):
        load_config("own_dataset", ["pretrain.dataset=coco_json"])
    with pytest.raises(ConfigError, match="pretrain.train_images names another dataset"):
        load_config("own_dataset", ["pretrain.train_images=x"])
    with pytest.raises(ConfigError, match="pretrain.root is not read with pretrain.dataset=coco_json"):
        load_config("own_dataset", ["pretrain.dataset=coco_json", "pretrain.root=x", "pretrain.train_images=x",
                                    "pretrain.train_annotations=y"])
    with pytest.raises(ConfigError, match="pretrain.train_images is read only with pretrain.dataset=coco_json"):
        load_config("own_dataset", ["pretrain.dataset=synth", "pretrain.root=x", "pretrain.train_images=x"])
    with pytest.raises(ConfigError, match="data.augmentation: 'coco' is not one of auto, detr, synth, none"):
        load_config("own_dataset", ["data.augmentation=coco"])


def test_cli_refuses_a_missing_folder_with_one_line(user, tmp_path, capsys):
    moved = dict(user, train_images=tmp_path / "gone")
    code = main(["train", "-c", "own_dataset", *[a for o in by_paths(moved) for a in ("--set", o)],
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line(err, "groupdetr: dataset error: image folder not found", "gone", "data.train_images")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# num_classes


def test_num_classes_is_derived_from_the_categories_when_null(user):
    assert derived_num_classes(user["train_annotations"]) == 4  # ids 1 and 3: DETR's largest id + 1
    cfg = load_config("own_dataset", by_paths(user))
    resolved = resolve_num_classes(cfg)
    assert resolved.model.num_classes == 4 and to_dict(resolved)["model"]["num_classes"] == 4
    assert resolve_num_classes(resolved) is resolved  # a given number is kept
    coco = {"images": [], "annotations": [], "categories": [{"id": i} for i in (1, 2, 90)]}
    user["val_annotations"].write_text(json.dumps(coco))
    assert derived_num_classes(user["val_annotations"]) == 91  # COCO's 91 is the same rule


def test_a_classifier_too_small_for_the_categories_is_refused_with_one_line(user):
    cfg = load_config("own_dataset", by_paths(user, "model.num_classes=3"))  # id 3 needs 4 logits
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg, "train")
    assert_one_line(str(err.value), str(user["train_annotations"]), "category id 3", "model.num_classes >= 4", "got 3")


def test_a_classifier_larger_than_the_categories_need_is_a_warning(user, caplog):
    cfg = load_config("own_dataset", by_paths(user, "model.num_classes=9"))  # cpu_small's 9 on this dataset
    with caplog.at_level(logging.WARNING, logger="groupdetr.data"):
        build_dataset(cfg, "train")
    messages = [r.getMessage() for r in caplog.records if r.name == "groupdetr.data"]
    assert any("model.num_classes=9" in m and "5 logits" in m and "derives 4" in m for m in messages), messages


def test_a_null_num_classes_never_reaches_a_model():
    from groupdetr.build import build_model

    with pytest.raises(ConfigError, match="model.num_classes is null"):
        build_model(load_config("own_dataset", MODEL + ["model.backbone.weights=null"]).model)


# ---------------------------------------------------------------------------------------------
# augmentation: its own key, sizes relative to data.image_size


def _sizes(transform, image_hw, seeds=60) -> set[tuple[int, int]]:
    image = torch.zeros(3, *image_hw, dtype=torch.uint8)
    target = _box_target(image_hw)
    shapes = set()
    for seed in range(seeds):
        torch.manual_seed(seed)
        out, _ = transform(image, target)
        shapes.add(tuple(out.shape[-2:]))
    return shapes


def _box_target(image_hw):
    from torchvision import tv_tensors

    boxes = tv_tensors.BoundingBoxes(torch.tensor([[2.0, 2.0, 20.0, 20.0]]), format="XYXY", canvas_size=image_hw)
    return {"boxes": boxes, "labels": torch.tensor([1]), "image_id": torch.tensor(1),
            "orig_size": torch.tensor(image_hw), "size": torch.tensor(image_hw)}


def test_detr_sizes_at_image_size_256():
    scales = tuple(paper_size(s, 256) for s in PAPER_SCALES)
    assert scales == (154, 164, 174, 184, 195, 205, 215, 225, 236, 246, 256)
    assert paper_size(PAPER_MAX_SIZE, 256) == 427
    train = build_transforms("detr", "train", 256)
    assert train.transforms[1].first == RandomResize(scales, 427)
    assert train.transforms[1].second.transforms[:2] == (
        [RandomResize((128, 160, 192)), RandomSizeCrop(123, 192)])
    # a 300 x 400 image (a user's tile): short sides within 154..256 in training, exactly 256 in validation
    shorts = {min(hw) for hw in _sizes(train, (300, 400))}
    assert shorts <= set(scales) and len(shorts) > 3
    assert _sizes(build_transforms("detr", "val", 256), (300, 400), seeds=2) == {(256, 341)}
    # an elongated image: the long side stays within 1333 x 256 / 800
    assert max(max(hw) for hw in _sizes(train, (100, 800))) <= 427
    assert _sizes(build_transforms("detr", "val", 256), (100, 800), seeds=1) == {(53, 424)}  # DETR rounds the short side


def test_synth_and_none_at_image_size_256():
    jitter = {int(round(f * 256)) for f in SYNTH_SCALE_JITTER}
    assert jitter == {224, 256, 288}
    assert {min(hw) for hw in _sizes(build_transforms("synth", "train", 256), (300, 400))} == jitter
    for preset in ("synth", "none"):
        assert _sizes(build_transforms(preset, "val", 256), (300, 400), seeds=1) == {(256, 341)}
    assert _sizes(build_transforms("none", "train", 256), (300, 400)) == {(256, 341)}


def test_at_the_paper_size_the_detr_preset_is_detrs_own():
    """At data.image_size=800 the transforms equal DETR's as the coco preset built them before
    data.augmentation existed (written out here), and the validation resize gives the same pixels."""
    multiscale = RandomResize(tuple(range(480, 801, 32)), 1333)
    before = Compose([RandomHorizontalFlip(0.5), RandomSelect(
        multiscale, Compose([RandomResize((400, 500, 600)), RandomSizeCrop(384, 600), multiscale]))])
    assert build_transforms("detr", "train", 800) == before
    image, target = torch.randint(0, 256, (3, 500, 640), dtype=torch.uint8), _box_target((500, 640))
    old, new = RandomResize((800,), 1333)(image, target), build_transforms("detr", "val", 800)(image, target)
    assert torch.equal(old[0], new[0]) and torch.equal(old[1]["boxes"], new[1]["boxes"])
    # and the synth training augmentation is what it was
    assert build_transforms("synth", "train", 64) == Compose([RandomHorizontalFlip(0.5), RandomResize((56, 64, 72))])


def test_the_augmentation_is_chosen_by_its_own_key(user):
    cfg = load_config("own_dataset", by_paths(user, "model.num_classes=4", "data.image_size=64"))
    assert build_dataset(cfg, "train").transforms == build_transforms("detr", "train", 64)  # auto: DETR's
    for preset in names.AUGMENTATIONS:
        chosen = load_config("own_dataset", by_paths(user, "model.num_classes=4", "data.image_size=64",
                                                     f"data.augmentation={preset}"))
        for split in ("train", "val"):
            assert build_dataset(chosen, split).transforms == build_transforms(preset, split, 64)
    assert load_config("cpu_small").data.augmentation == "auto"  # the presets keep the dataset's own


@pytest.mark.parametrize("recipe", ["cpu_study", "cpu_small"])
def test_the_synth_validation_resize_leaves_the_rendered_benchmark_untouched(tmp_path, recipe):
    """The measured presets validate exactly as before the synth preset resized validation images: the
    benchmark is rendered at data.image_size, and Resize returns such an image (and its target) as they are."""
    cfg = load_config(recipe, [f"data.root={tmp_path}", "data.synth.num_train=1", "data.synth.num_val=3"])
    generate(cfg.data, tmp_path, workers=1)
    val = build_dataset(cfg, "val")
    assert val.transforms == Resize(cfg.data.image_size)
    untransformed = CocoDetection(*dataset_paths("synth", tmp_path, "val"), transforms=None)
    for i in range(len(val)):
        info = val.coco.imgs[val.ids[i]]
        assert (info["height"], info["width"]) == (cfg.data.image_size,) * 2
        raw_image, raw_target = val._read_image(info), val._target(info, val._anns[info["id"]])
        out_image, out_target = val.transforms(raw_image, raw_target)
        assert out_image is raw_image and out_target is raw_target
        (a, ta), (b, tb) = val[i], untransformed[i]
        assert torch.equal(a, b) and ta.keys() == tb.keys()
        for k in ta:  # bit for bit; yaw_period is NaN for rotation-symmetric shapes
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# box-only pretraining on a dataset by paths


def _old_cache_key(spec, fingerprint: str) -> str:
    """The key as it was computed before data.augmentation (the dataset name alone implied the augmentation)."""
    blob = json.dumps({"version": PRETEXT_VERSION, "dataset": spec.dataset, "fingerprint": fingerprint,
                       "image_size": spec.image_size, "backbone": spec.backbone, "settings": spec.settings},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_the_benchmarks_pretraining_cache_keys_are_unchanged_and_others_name_the_augmentation(tmp_path):
    for recipe in ("cpu_study", "cpu_small"):
        spec = pretrain_spec(load_config(recipe))
        assert spec.augmentation == "synth" and cache_key(spec, "f" * 64) == _old_cache_key(spec, "f" * 64)
    own = pretrain_spec(load_config("own_dataset"))
    assert own.augmentation == "detr" and cache_key(own, "f" * 64) != _old_cache_key(own, "f" * 64)
    other = pretrain_spec(load_config("cpu_small", ["data.augmentation=none"]))
    assert cache_key(other, "f" * 64) != cache_key(pretrain_spec(load_config("cpu_small")), "f" * 64)


#: the tiny model of the tests, its classes and backbone weights left to each test
MODEL = [o for o in TINY if not o.startswith(("model.num_classes=", "model.backbone.weights="))]


def _pretrain_overrides(cache: Path) -> list[str]:
    return [*MODEL, "model.num_classes=null", "model.backbone.weights=pretrain", "data.image_size=48",
            "pretrain.steps=2", "pretrain.batch_size=2", f"pretrain.cache={cache}"]


def test_pretraining_reads_a_dataset_by_paths(user, tmp_path):
    from groupdetr.pretrain.run import pretrain

    cfg = load_config("own_dataset", by_paths(user, *_pretrain_overrides(tmp_path / "cache")))
    path, record, built = pretrain(cfg)
    assert built and path.is_file()
    assert record["dataset"]["name"] == "coco_json" and record["dataset"]["source"] == str(user["train_annotations"])
    assert record["dataset"]["augmentation"] == "detr" and record["dataset"]["categories"] == [1, 3]
    assert record["dataset"]["fingerprint"] == dataset_fingerprint(user["train_images"], user["train_annotations"])["fingerprint"]
    assert record["metrics"]["heldout_images"] == 2  # the val split of data.*
    # pretraining on another dataset by paths (its training split; held out: the same images, unaugmented)
    other = write_user_dataset(tmp_path / "other", sizes=((50, 50),) * 3)
    named = load_config("cpu_small", [*_pretrain_overrides(tmp_path / "cache"), "model.num_classes=9",
                                      f"data.root={tmp_path / 'unused'}", "pretrain.dataset=coco_json",
                                      f"pretrain.train_images={other['train_images']}",
                                      f"pretrain.train_annotations={other['train_annotations']}"])
    _, record, _ = pretrain(named)
    assert record["dataset"]["source"] == str(other["train_annotations"]) and record["metrics"]["heldout_images"] == 3
    missing = load_config("cpu_small", [*_pretrain_overrides(tmp_path / "cache"), "model.num_classes=9",
                                        "pretrain.dataset=coco_json", f"pretrain.train_images={tmp_path / 'gone'}",
                                        f"pretrain.train_annotations={other['train_annotations']}"])
    with pytest.raises(DatasetError) as err:
        pretrain(missing)
    assert_one_line(str(err.value), "pretrain.train_images", "gone")


# ---------------------------------------------------------------------------------------------
# groupdetr derive -> read by paths -> a smoke training through the CLI


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    root = tmp_path_factory.mktemp("derived")
    generate(load_config("cpu_small", ["data.synth.num_train=6", "data.synth.num_val=3", "data.image_size=48"]).data,
             root / "bench", workers=1)
    derive_dataset(root / "bench", root / "mine")
    return root / "mine"


def test_derive_output_reads_by_paths(derived):
    overrides = derived_overrides(derived)
    assert overrides[:2] == ["data.dataset=coco_json", "data.root=null"]
    cfg = resolve_num_classes(load_config("own_dataset", overrides))
    assert cfg.model.num_classes == 2  # one class, id 1
    assert len(build_dataset(cfg, "train")) == 6 and len(build_dataset(cfg, "val")) == 3


def test_cli_trains_on_a_dataset_by_paths_and_finds_its_run_again(derived, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [*derived_overrides(derived), *_pretrain_overrides(tmp_path / "cache"), "train.max_iters_per_epoch=2",
                 "optim.epochs=1", "optim.batch_size=2", "model.num_groups=2"]
    argv = ["train", "-c", "own_dataset", *[a for o in overrides for a in ("--set", o)], "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    config = (out / "config.yaml").read_text()
    assert "num_classes: 2\n" in config and "dataset: coco_json" in config and "bbox/AP" in json.dumps(metrics)
    assert json.loads((out / "manifest.json").read_text())["backbone_weights"]["pretrain"]["steps"] == 2
    capsys.readouterr()
    assert main(argv) == 0  # the same command again: the run is finished, not refused as another config
    assert json.loads(capsys.readouterr().out) == metrics
