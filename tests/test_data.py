"""Data pipeline: targets, 2D/3D consistency of every geometric transform, validation, batching,
seeding. Datasets are written by hand into tmp_path: two PNGs, RLE and polygon masks, 3D labels
whose centres project inside their 2D boxes."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from groupdetr.config import load_config
from groupdetr.data import DatasetError, build_dataset, build_loader, collate, dataset_paths
from groupdetr.data.coco import CocoDetection
from groupdetr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_SCALES,
    Compose,
    RandomHorizontalFlip,
    RandomResize,
    RandomSizeCrop,
    crop,
    paper_size,
    resized_shape,
)
from groupdetr.geometry import flip_yaw, project

W1, H1 = 64, 48  # image 1 (landscape)
W2, H2 = 40, 56  # image 2 (portrait)
K1 = [[60.0, 0.0, 30.25], [0.0, 58.0, 22.5], [0.0, 0.0, 1.0]]
K2 = [[50.0, 0.0, 20.5], [0.0, 50.0, 27.0], [0.0, 0.0, 1.0]]


def _centre(uv, z, k):
    """Camera-frame point at depth z projecting to pixel uv."""
    (fx, _, cx), (_, fy, cy), _ = k
    return [(uv[0] - cx) / fx * z, (uv[1] - cy) / fy * z, z]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _masks_image1() -> dict[int, np.ndarray]:
    rect = np.zeros((H1, W1), bool)
    rect[10:22, 8:24] = True  # bbox [8, 10, 16, 12]
    ell = np.zeros((H1, W1), bool)  # an L whose extent is bbox [40, 20, 20, 24]
    ell[20:44, 40:45] = True
    ell[40:44, 40:60] = True
    return {11: rect, 12: ell}


def _annotation_json() -> dict:
    m = _masks_image1()
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [8, 10, 16, 12], "segmentation": _rle(m[11]),
         "center_3d": _centre((16.5, 15.25), 6.0, K1), "dims_3d": [1.0, 1.5, 2.0], "yaw_3d": 0.3},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [40, 20, 20, 24], "segmentation": _rle(m[12]),
         "center_3d": _centre((50.0, 30.0), 9.0, K1), "dims_3d": [0.5, 0.5, 0.5], "yaw_3d": -2.0},
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1,
         "segmentation": _rle(np.ones((H1, W1), bool))},
        {"id": 14, "image_id": 1, "category_id": 2, "bbox": [64, 5, 1, 5],  # empty once clipped
         "segmentation": _rle(np.zeros((H1, W1), bool)),
         "center_3d": [0.0, 0.0, 5.0], "dims_3d": [1.0, 1.0, 1.0], "yaw_3d": 0.0},
        {"id": 21, "image_id": 2, "category_id": 2, "bbox": [5, 30, 20, 20],
         "segmentation": [[5, 30, 25, 30, 25, 50, 5, 50]],  # polygon
         "center_3d": _centre((14.0, 41.0), 4.0, K2), "dims_3d": [2.0, 1.0, 3.0], "yaw_3d": 1.0},
    ]
    for a in anns:
        a.setdefault("iscrowd", 0)
        a["area"] = a["bbox"][2] * a["bbox"][3]
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": W1, "height": H1, "intrinsics": K1, "camera_pitch": 0.2,
             "camera_height": 1.5},
            {"id": 2, "file_name": "b.png", "width": W2, "height": H2, "intrinsics": K2, "camera_pitch": 0.1,
             "camera_height": 1.5},
        ],
        "annotations": anns,
        "categories": [{"id": i, "name": f"c{i}", "supercategory": "s"} for i in (1, 2, 3)],
    }


def write_dataset(root: Path, dataset: str = "synth", split: str = "val", edit=None) -> tuple[Path, Path]:
    """Write the two-image dataset in ``dataset``'s layout; ``edit(json_dict)`` may alter it first."""
    image_dir, ann_file = dataset_paths(dataset, root, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in (("a.png", (W1, H1)), ("b.png", (W2, H2))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_dir / name)
    data = _annotation_json()
    if edit is not None:
        edit(data)
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file


@pytest.fixture
def paths(tmp_path):
    return write_dataset(tmp_path)


def dataset(paths, transforms=None, masks=True) -> CocoDetection:
    return CocoDetection(*paths, transforms=transforms, return_masks=masks)


def pixel_xyxy(target) -> torch.Tensor:
    """Normalised cxcywh -> pixel xyxy of the transformed image."""
    h, w = target["size"].tolist()
    c = target["boxes"] * torch.tensor([w, h, w, h])
    return torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1)


def projected(target) -> np.ndarray:
    return project(target["center_3d"].double().numpy(), target["intrinsics"].double().numpy())


def mask_extent(mask: torch.Tensor) -> torch.Tensor:
    """[H, W] bool -> pixel xyxy extent (continuous: last pixel j ends at j + 1)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


# ---------------------------------------------------------------------------------------------
# targets


def test_target_contents_and_dtypes(paths):
    ds = dataset(paths)
    assert len(ds) == 2
    image, t = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H1, W1)
    raw = torch.from_numpy(np.array(Image.open(paths[0] / "a.png"))).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(image * std + mean, raw, atol=1e-6, rtol=0)

    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["labels"].tolist() == [1, 3]  # crowd (13) and degenerate (14) dropped
    expected = torch.tensor([[16 / W1, 16 / H1, 16 / W1, 12 / H1], [50 / W1, 32 / H1, 20 / W1, 24 / H1]])
    torch.testing.assert_close(t["boxes"], expected)
    assert int(t["image_id"]) == 1
    assert t["orig_size"].tolist() == [H1, W1] and t["size"].tolist() == [H1, W1]

    m = _masks_image1()
    assert t["masks"].dtype == torch.bool and t["masks"].shape == (2, H1, W1)
    assert torch.equal(t["masks"][0], torch.from_numpy(m[11])) and torch.equal(t["masks"][1], torch.from_numpy(m[12]))

    assert t["center_3d"].shape == (2, 3) and t["dims_3d"].shape == (2, 3) and t["yaw_3d"].shape == (2,)
    assert all(t[k].dtype == torch.float32 for k in ("center_3d", "dims_3d", "yaw_3d", "intrinsics", "camera_pitch"))
    assert torch.equal(t["intrinsics"], torch.tensor(K1))
    assert t["camera_pitch"].shape == () and float(t["camera_pitch"]) == pytest.approx(0.2)
    torch.testing.assert_close(t["yaw_3d"], torch.tensor([0.3, -2.0]))
    np.testing.assert_allclose(projected(t), [[16.5, 15.25], [50.0, 30.0]], atol=1e-4)

    _, t2 = ds[1]  # polygon segmentation decodes to the box extent
    assert t2["orig_size"].tolist() == [H2, W2] and t2["masks"].shape == (1, H2, W2)
    torch.testing.assert_close(mask_extent(t2["masks"][0]), pixel_xyxy(t2)[0], atol=1.0, rtol=0)


def test_dataset_paths_follow_the_layout_table(tmp_path):
    assert dataset_paths("coco", tmp_path, "train") == (tmp_path / "train2017", tmp_path / "annotations/instances_train2017.json")
    assert dataset_paths("coco", tmp_path, "val") == (tmp_path / "val2017", tmp_path / "annotations/instances_val2017.json")
    assert dataset_paths("synth", tmp_path, "val") == (tmp_path / "val", tmp_path / "annotations/instances_val.json")
    with pytest.raises(DatasetError):
        dataset_paths("voc", tmp_path, "val")
    with pytest.raises(DatasetError):
        dataset_paths("coco", tmp_path, "test")


def test_construction_prints_nothing(paths, capsys):
    dataset(paths)
    assert capsys.readouterr().out == ""


def test_no_masks_unless_requested(paths):
    _, t = dataset(paths, masks=False)[0]
    assert "masks" not in t


def test_coco_without_3d_has_no_3d_keys(tmp_path):
    def strip(data):
        for rec in data["images"] + data["annotations"]:
            for k in ("intrinsics", "camera_pitch", "camera_height", "center_3d", "dims_3d", "yaw_3d"):
                rec.pop(k, None)

    _, t = dataset(write_dataset(tmp_path, "coco", "val", strip))[0]
    assert set(t) == {"boxes", "labels", "image_id", "orig_size", "size", "masks"}


# ---------------------------------------------------------------------------------------------
# flip


def test_flip_mirrors_2d_and_3d(paths):
    image0, t0 = dataset(paths)[0]
    image, t = dataset(paths, RandomHorizontalFlip(1.0))[0]
    assert torch.equal(image, image0.flip(-1))
    assert torch.equal(t["masks"], t0["masks"].flip(-1))
    torch.testing.assert_close(t["boxes"][:, 0], 1 - t0["boxes"][:, 0])
    torch.testing.assert_close(t["boxes"][:, 1:], t0["boxes"][:, 1:])
    assert float(t["intrinsics"][0, 2]) == W1 - K1[0][2]

    uv0, uv = projected(t0), projected(t)
    np.testing.assert_allclose(uv, np.stack([W1 - uv0[:, 0], uv0[:, 1]], 1), atol=1e-4)
    box = pixel_xyxy(t).numpy()
    assert np.all((box[:, 0] < uv[:, 0]) & (uv[:, 0] < box[:, 2]) & (box[:, 1] < uv[:, 1]) & (uv[:, 1] < box[:, 3]))

    np.testing.assert_allclose(t["yaw_3d"].numpy(), flip_yaw(t0["yaw_3d"].double().numpy()), atol=1e-6)
    assert torch.equal(t["dims_3d"], t0["dims_3d"]) and torch.equal(t["camera_pitch"], t0["camera_pitch"])


def test_flip_twice_restores_every_field(paths):
    image0, t0 = dataset(paths)[0]
    image, t = dataset(paths, Compose([RandomHorizontalFlip(1.0), RandomHorizontalFlip(1.0)]))[0]
    assert torch.equal(image, image0)
    assert set(t) == set(t0)
    for key in t0:
        assert torch.equal(t[key], t0[key]), key


def test_flip_yaw_mirrors_the_heading():
    yaw = np.linspace(-np.pi, np.pi, 25, endpoint=False)
    flipped = flip_yaw(yaw)
    # the length axis (cos, sin) in BEV (x_g, z_g) is mirrored x_g -> -x_g
    np.testing.assert_allclose(np.cos(flipped), -np.cos(yaw), atol=1e-12)
    np.testing.assert_allclose(np.sin(flipped), np.sin(yaw), atol=1e-12)
    assert np.all((flipped >= -np.pi) & (flipped < np.pi))


# ---------------------------------------------------------------------------------------------
# resize and crop


@pytest.mark.parametrize("short", [96, 37])
def test_resize_scales_projection_boxes_and_masks(paths, short):
    _, t0 = dataset(paths)[0]
    image, t = dataset(paths, RandomResize([short]))[0]
    h, w = resized_shape(H1, W1, short)
    assert image.shape == (3, h, w) and t["size"].tolist() == [h, w] and t["orig_size"].tolist() == [H1, W1]
    sx, sy = w / W1, h / H1
    np.testing.assert_allclose(projected(t), projected(t0) * [sx, sy], atol=1e-3)
    torch.testing.assert_close(pixel_xyxy(t), pixel_xyxy(t0) * torch.tensor([sx, sy, sx, sy]), atol=1e-3, rtol=0)
    for mask, box in zip(t["masks"], pixel_xyxy(t)):
        torch.testing.assert_close(mask_extent(mask), box, atol=1.0, rtol=0)
    for key in ("center_3d", "dims_3d", "yaw_3d", "camera_pitch"):
        assert torch.equal(t[key], t0[key]), key


def test_resized_shape_follows_detr():
    assert resized_shape(480, 640, 800, 1333) == (800, 1066)
    assert resized_shape(100, 1000, 800, 1333) == (133, 1330)  # long side capped
    assert resized_shape(640, 480, 800) == (1066, 800)
    assert resized_shape(48, 64, 48) == (48, 64)


def _with_extra_key(image, target):
    """Add a per-object key the transforms do not know about."""
    return image, {**target, "visibility": torch.arange(len(target["labels"]), dtype=torch.float64)}


def test_crop_removes_objects_from_every_field(paths):
    _, t0 = dataset(paths)[0]
    top, left, h, w = 5, 2, 30, 36  # object 12 (x in [40, 60]) falls outside
    image, t = dataset(paths, Compose([_with_extra_key, lambda im, tg: crop(im, tg, (top, left, h, w))]))[0]
    assert image.shape == (3, h, w)
    assert t["labels"].tolist() == [1]
    for key in ("boxes", "masks", "center_3d", "dims_3d", "yaw_3d", "visibility"):
        assert t[key].shape[0] == 1, key
    assert t["visibility"].tolist() == [0.0]
    for key in ("center_3d", "dims_3d", "yaw_3d"):
        assert torch.equal(t[key], t0[key][:1]), key
    assert torch.equal(t["masks"][0], t0["masks"][0, top:top + h, left:left + w])
    torch.testing.assert_close(pixel_xyxy(t)[0], torch.tensor([8.0 - left, 10.0 - top, 24.0 - left, 22.0 - top]))
    assert t["intrinsics"][0, 2] == K1[0][2] - left and t["intrinsics"][1, 2] == K1[1][2] - top
    np.testing.assert_allclose(projected(t), projected(t0)[:1] - [left, top], atol=1e-4)


def test_crop_clips_partially_visible_boxes(paths):
    _, t = dataset(paths, lambda im, tg: crop(im, tg, (0, 45, 30, 19)))[0]  # cuts object 12 only
    assert t["labels"].tolist() == [3]
    torch.testing.assert_close(pixel_xyxy(t)[0], torch.tensor([0.0, 20.0, 15.0, 30.0]))
    assert t["masks"].shape == (1, 30, 19)


def test_random_size_crop_is_consistent(paths):
    image0, t0 = dataset(paths)[0]
    ds = dataset(paths, RandomSizeCrop(20, 30))
    for seed in range(4):
        torch.manual_seed(seed)
        image, t = ds[0]
        h, w = t["size"].tolist()
        assert 20 <= h <= 30 and 20 <= w <= 30
        # the offset read from the intrinsics is where the pixels came from
        left, top = K1[0][2] - float(t["intrinsics"][0, 2]), K1[1][2] - float(t["intrinsics"][1, 2])
        assert left == int(left) and top == int(top)
        assert torch.equal(image, image0[:, int(top):int(top) + h, int(left):int(left) + w])
        assert len(t["labels"]) == len(t["boxes"]) == len(t["masks"]) == len(t["center_3d"]) == len(t["yaw_3d"])


# ---------------------------------------------------------------------------------------------
# validation


def _set_ann(ann_id, **kv):
    def edit(data):
        next(a for a in data["annotations"] if a["id"] == ann_id).update(kv)

    return edit


def test_missing_root(tmp_path):
    cfg = load_config("cpu_small", [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg, "train")
    assert_one_line(err, "nowhere")


def test_missing_image_dir_and_annotation_file(tmp_path, paths):
    with pytest.raises(DatasetError) as err:
        CocoDetection(tmp_path / "no_images", paths[1])
    assert_one_line(err, "no_images")
    with pytest.raises(DatasetError) as err:
        CocoDetection(paths[0], tmp_path / "no_ann.json")
    assert_one_line(err, "no_ann.json")


def test_missing_image_file(paths):
    (paths[0] / "b.png").unlink()
    with pytest.raises(DatasetError) as err:
        dataset(paths)
    assert_one_line(err, "b.png", str(paths[1]))


def test_malformed_json(paths):
    paths[1].write_text('{"images": [\n  {"id": 1,, }')
    with pytest.raises(DatasetError) as err:
        dataset(paths)
    assert_one_line(err, str(paths[1]), "line 2")


def test_box_outside_image(tmp_path):
    paths = write_dataset(tmp_path, edit=_set_ann(12, bbox=[50, 20, 20, 24]))  # x + w = 70 > 64 + 1
    with pytest.raises(DatasetError) as err:
        dataset(paths)
    assert_one_line(err, str(paths[1]), "annotation 12", "image 1")


def test_box_within_tolerance_is_clipped(tmp_path):
    paths = write_dataset(tmp_path, edit=_set_ann(12, bbox=[45, 20, 20, 24]))  # x + w = 65: 1 px over
    _, t = dataset(paths, masks=False)[0]
    assert float(pixel_xyxy(t)[1, 2]) == pytest.approx(W1)


def test_unknown_category(tmp_path):
    paths = write_dataset(tmp_path, edit=_set_ann(21, category_id=99))
    with pytest.raises(DatasetError) as err:
        dataset(paths)
    assert_one_line(err, str(paths[1]), "annotation 21", "99")


def test_unreadable_image(paths):
    (paths[0] / "a.png").write_bytes(b"not a png")
    ds = dataset(paths)  # existence is checked at construction, decoding on access
    with pytest.raises(DatasetError) as err:
        ds[0]
    assert_one_line(err, "a.png")


def test_crowd_and_degenerate_are_dropped_and_logged(paths, caplog):
    with caplog.at_level(logging.INFO, logger="groupdetr.data"):
        ds = dataset(paths)
    records = [r for r in caplog.records if r.name == "groupdetr.data"]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert "1 crowd" in msg and "1 degenerate" in msg and paths[1].name in msg
    assert ds[0][1]["labels"].tolist() == [1, 3]


def test_num_classes_must_cover_category_ids(tmp_path):
    write_dataset(tmp_path, "synth", "val")
    cfg = load_config("cpu_small", [f"data.root={tmp_path}", "model.num_classes=3"])  # ids go to 3
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg, "val")
    assert_one_line(err, "model.num_classes")


# ---------------------------------------------------------------------------------------------
# presets, batching, seeding


def test_build_dataset_presets(tmp_path):
    write_dataset(tmp_path / "s", "synth", "val")
    cfg = load_config("cpu_small", [f"data.root={tmp_path / 's'}", "data.image_size=64"])
    image, t = build_dataset(cfg, "val")[0]
    assert t["size"].tolist() == [64, 85]  # synth eval: short side data.image_size (48 x 64 -> 64 x 85)

    write_dataset(tmp_path / "c", "coco", "val")
    write_dataset(tmp_path / "c", "coco", "train")
    cfg = load_config("cpu_small", [f"data.root={tmp_path / 'c'}", "data.dataset=coco", "data.image_size=96"])
    _, t = build_dataset(cfg, "val", return_masks=True)[0]
    assert t["size"].tolist() == [96, 128] and t["masks"].shape == (2, 96, 128)
    train = build_dataset(cfg, "train")
    for seed in range(3):
        torch.manual_seed(seed)
        _, t = train[0]
        assert min(t["size"].tolist()) in {paper_size(s, 96) for s in PAPER_SCALES}  # DETR's, x 96 / 800


def test_collate_pads_and_masks(paths):
    ds = dataset(paths)
    batch = [ds[0], ds[1]]
    images, pad_mask, targets = collate(batch)
    assert images.shape == (2, 3, H2, W1) and pad_mask.shape == (2, H2, W1) and pad_mask.dtype == torch.bool
    expected = torch.ones(2, H2, W1, dtype=torch.bool)
    expected[0, :H1, :W1] = False
    expected[1, :H2, :W2] = False
    assert torch.equal(pad_mask, expected)
    assert torch.equal(images[0, :, :H1, :W1], batch[0][0]) and torch.equal(images[1, :, :H2, :W2], batch[1][0])
    assert not images.masked_select(pad_mask[:, None].expand_as(images)).any()
    assert [int(t["image_id"]) for t in targets] == [1, 2]

    images, pad_mask, _ = collate(batch, size_divisibility=32)
    assert images.shape == (2, 3, 64, 64) and pad_mask[:, H2:].all() and not pad_mask[0, :H1, :W1].any()


def test_same_torch_seed_same_augmented_sample(tmp_path):
    write_dataset(tmp_path, "synth", "train")
    ds = build_dataset(load_config("cpu_small", [f"data.root={tmp_path}", "data.image_size=48"]), "train")
    samples = []
    for seed in range(6):
        torch.manual_seed(seed)
        a = ds[0]
        torch.manual_seed(seed)
        b = ds[0]
        assert torch.equal(a[0], b[0])
        assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        samples.append((tuple(a[0].shape), float(a[1]["intrinsics"][0, 2])))
    assert len(set(samples)) > 1  # the augmentation is random at all


def _epoch(loader):
    return [(images, [int(t["image_id"]) for t in targets]) for images, _, targets in loader]


def test_loader_seeded_across_workers(tmp_path):
    write_dataset(tmp_path, "synth", "train")
    ds = build_dataset(load_config("cpu_small", [f"data.root={tmp_path}", "data.image_size=48"]), "train")
    runs = {seed: [_epoch(build_loader(ds, 1, True, 2, seed)) for _ in range(2)] for seed in (0, 1)}
    for seed, (first, second) in runs.items():
        assert [ids for _, ids in first] == [ids for _, ids in second]
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second)), seed
    differs = [not torch.equal(a, b) for (a, _), (b, _) in zip(runs[0][0], runs[1][0]) if a.shape == b.shape]
    shapes_differ = [a.shape != b.shape for (a, _), (b, _) in zip(runs[0][0], runs[1][0])]
    assert any(differs) or any(shapes_differ)


def test_image_without_objects_passes_every_transform(tmp_path):
    def only_image_2_annotated(data):
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 2]

    paths = write_dataset(tmp_path, edit=only_image_2_annotated)
    pipeline = Compose([RandomHorizontalFlip(1.0), RandomResize([40]), RandomSizeCrop(20, 30)])
    _, t = dataset(paths, pipeline)[0]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape[0] == 0
    assert t["center_3d"].shape == (0, 3) and t["yaw_3d"].shape == (0,) and t["intrinsics"].shape == (3, 3)


def test_loader_batches_feed_the_detector_and_criterion(tmp_path):
    from groupdetr.build import build_all

    write_dataset(tmp_path, "synth", "train")
    cfg = load_config(
        "cpu_small",
        [f"data.root={tmp_path}", "data.image_size=48", "model.hidden_dim=32", "model.nheads=2",
         "model.enc_layers=1", "model.dec_layers=1", "model.dim_feedforward=32", "model.num_queries=4",
         "model.num_groups=2", "model.backbone.channels=[8,16,16]", "model.backbone.weights=null"],
    )
    torch.manual_seed(0)
    model, criterion, _ = build_all(cfg)
    images, pad_mask, targets = next(iter(build_loader(build_dataset(cfg, "train"), 2, True, 0, seed=0)))
    losses = criterion(model(images, pad_mask), targets)
    assert all(torch.isfinite(v) for v in losses.values())
