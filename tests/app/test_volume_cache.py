"""The decoded volume cache (volume_cache.py) and whole-batch loading (data/dataset.py):
the same batches bit for bit with and without the cache, with and without
DataLoader workers; a stale cache rebuilt, never read; several processes building
it once; an unreadable volume left out and still reported where it is used."""
import json
import multiprocessing
import os
import pathlib
import time

import nibabel
import numpy as np
import pytest
import torch
from conftest import tiny_config, write_cohort

from spinerank import volume_cache
from spinerank.data import DiscDataset, EpochSampler, loader, read_labels, split_rows, volume_cache as open_cache
from spinerank.data import load_or_make_splits, volume_name
from spinerank.tasks import TaskTable
from spinerank.train import Trainer

SHAPE = (6, 20, 24)  # (D, H, W): crops (20, 24, 6) of the cohort are fitted to it unchanged ...
OTHER = (4, 16, 30)  # ... and to this one cropped (D, H) and padded (W)


@pytest.fixture
def cohort(tmp_path):
    folder = write_cohort(tmp_path / "cohort", subjects=12)
    # Half the volumes as NIfTI, as the importers write them.
    for path in sorted((folder / "volumes").glob("*_T2.npy")):
        nibabel.save(nibabel.Nifti1Image(np.load(path), np.eye(4)), str(path.with_suffix(".nii.gz")))
        path.unlink()
    return folder


def rows_of(folder):
    return read_labels(folder, TaskTable())


def batches(dataset, sampler_orders, batch_size=5, workers=0):
    """Every batch of a training loader over epochs given as (epoch tag, order)."""
    sampler = EpochSampler()
    batches_loader = loader(dataset, batch_size, sampler=sampler, num_workers=workers)
    out = []
    for tag, order in sampler_orders:
        dataset.set_epoch(tag)
        sampler.set_epoch(tag, order)
        out += [(v.clone(), g.clone()) for v, g in batches_loader]
    return out


@pytest.mark.parametrize("shape", [SHAPE, OTHER])
def test_batches_are_the_same_bit_for_bit_with_and_without_the_cache(cohort, shape):
    rows = rows_of(cohort)
    cache = open_cache(cohort, rows, shape, progress=False)
    assert cache is not None and len(cache.rows) == len(rows)
    plain = DiscDataset(cohort, rows, TaskTable(), shape, mode="train", seed=3)
    n = len(plain)
    orders = [(tag, torch.randperm(n, generator=torch.Generator().manual_seed(tag)).tolist()) for tag in (0, 1, 1001)]
    cached = DiscDataset(cohort, rows, TaskTable(), shape, mode="train", seed=3, cache=cache)
    a, b = batches(plain, orders), batches(cached, orders)
    assert len(a) == len(b) > 3
    for (va, ga), (vb, gb) in zip(a, b):
        assert va.shape[1:] == (1, *shape) and va.dtype == torch.float32
        assert torch.equal(va, vb) and torch.equal(ga, gb)
    # One item as __getitem__ gives it: the volume file itself, fitted, transposed to (D, H, W).
    row = plain.row(0)
    item, _ = plain[0]
    path = plain.paths[row]
    raw = np.load(path) if path.suffix == ".npy" else nibabel.load(str(path)).get_fdata(dtype=np.float32)
    assert torch.equal(cached[0][0], item)
    if shape == SHAPE:
        assert np.array_equal(item[0].numpy(), raw.transpose(2, 0, 1))
    # Evaluation loaders: one item per volume, in order.
    ev_plain = DiscDataset(cohort, rows, TaskTable(), shape, mode="eval")
    ev_cached = DiscDataset(cohort, rows, TaskTable(), shape, mode="eval", cache=cache)
    for (va, ga), (vb, gb) in zip(loader(ev_plain, 7), loader(ev_cached, 7)):
        assert torch.equal(va, vb) and torch.equal(ga, gb)


def test_persistent_workers_load_what_the_main_process_loads(cohort):
    rows = rows_of(cohort)
    cache = open_cache(cohort, rows, SHAPE, progress=False)
    dataset = DiscDataset(cohort, rows, TaskTable(), SHAPE, mode="train", seed=5, cache=cache)
    n = len(dataset)
    orders = [(tag, list(range(n))[::-1] if tag % 2 else list(range(n))) for tag in (0, 1, 2)]
    main = batches(dataset, orders)
    worker = batches(DiscDataset(cohort, rows, TaskTable(), SHAPE, mode="train", seed=5, cache=cache), orders,
                     workers=1)
    assert len(main) == len(worker)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, worker))
    # The epoch travels with the index: the sequence picked changes between epochs as in the main process.
    picks = {tag: [dataset.row(i, tag).sequence for i in range(len(dataset))] for tag in (0, 1)}
    assert picks[0] != picks[1]


def test_a_changed_added_or_removed_volume_rebuilds_the_cache(cohort):
    rows = rows_of(cohort)
    first = open_cache(cohort, rows, SHAPE, progress=False)
    again = open_cache(cohort, rows, SHAPE, progress=False)
    assert again.file == first.file  # valid: reused
    name = volume_name(rows[0])
    path = next((cohort / "volumes").glob(f"{name}.*"))
    new = np.full((20, 24, 6), 7.0, dtype=np.float32)
    time.sleep(0.01)
    if path.suffix == ".npy":
        np.save(path, new)
    else:
        nibabel.save(nibabel.Nifti1Image(new, np.eye(4)), str(path))
    rebuilt = open_cache(cohort, rows, SHAPE, progress=False)
    assert rebuilt.file != first.file and not first.file.exists()  # the old array is gone
    assert np.array_equal(rebuilt.gather([name])[0], new.transpose(2, 0, 1))
    fewer = open_cache(cohort, rows[1:], SHAPE, progress=False)
    assert fewer.file != rebuilt.file and name not in fewer
    # An index that names a different array than the one on disk is never read as valid.
    index_path = volume_cache._index_path(volume_cache.cache_dir(cohort), SHAPE)
    index = json.loads(index_path.read_text())
    index["array"] = "volumes-gone.npy"
    index_path.write_text(json.dumps(index))
    assert open_cache(cohort, rows[1:], SHAPE, progress=False).file.exists()


def test_the_cache_can_be_turned_off_or_moved(cohort, tmp_path, monkeypatch):
    rows = rows_of(cohort)
    monkeypatch.setenv("SPINERANK_CACHE", "0")
    assert open_cache(cohort, rows, SHAPE, progress=False) is None
    monkeypatch.setenv("SPINERANK_CACHE", "1")
    monkeypatch.setenv("SPINERANK_CACHE_DIR", str(tmp_path / "elsewhere"))
    cache = open_cache(cohort, rows, SHAPE, progress=False)
    assert cache.file.parent.parent == tmp_path / "elsewhere" and not (cohort / ".cache").exists()


def test_an_unreadable_volume_is_left_out_and_reported_where_it_is_used(cohort):
    rows = rows_of(cohort)
    name = volume_name(rows[2])
    path = next((cohort / "volumes").glob(f"{name}.*"))
    path.write_bytes(b"broken")
    cache = open_cache(cohort, rows, SHAPE, progress=False)
    assert name not in cache and len(cache.rows) == len(rows) - 1
    dataset = DiscDataset(cohort, [rows[2]], TaskTable(), SHAPE, mode="eval", cache=cache)
    with pytest.raises(ValueError, match=f"volume {path} cannot be read"):
        dataset[0]


def _open_in_process(folder, queue):
    rows = read_labels(folder, TaskTable())
    cache = open_cache(folder, rows, SHAPE, progress=False)
    queue.put(str(cache.file))


def test_processes_opening_at_once_build_it_once(cohort):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_open_in_process, args=(str(cohort), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    files = {queue.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(files) == 1 and pathlib.Path(files.pop()).exists()
    assert len(list((cohort / ".cache").glob("*.npy"))) == 1


def test_cache_files_honour_the_umask(cohort):
    old = os.umask(0o027)
    try:
        cache = open_cache(cohort, rows_of(cohort), SHAPE, progress=False)
    finally:
        os.umask(old)
    assert cache.file.stat().st_mode & 0o777 == 0o640


def test_training_is_the_same_with_and_without_the_cache(cohort, tmp_path, monkeypatch):
    """Two short runs, cache on and off: the same losses and metrics, bit for bit."""
    histories = []
    for cached in ("1", "0"):
        monkeypatch.setenv("SPINERANK_CACHE", cached)
        trainer = Trainer(tiny_config(cohort, tmp_path / f"run{cached}", epochs_phase1=1, epochs_phase2=1))
        assert (trainer.cache is not None) == (cached == "1")
        trainer.run()
        histories.append((tmp_path / f"run{cached}" / "metrics.jsonl").read_text().splitlines())
    strip = [[{k: v for k, v in json.loads(line).items() if "second" not in k and k != "time"} for line in h]
             for h in histories]
    assert strip[0] == strip[1]


def test_the_cache_command_builds_what_train_reads(cohort, capsys):
    from spinerank import cli

    assert cli.main(["cache", str(cohort), "--shape", *map(str, SHAPE), "--quiet"]) == 0
    volumes = len(rows_of(cohort))
    assert f"{volumes} volumes of {cohort} decoded at (D, H, W) {SHAPE}" in capsys.readouterr().out
    built = next((cohort / ".cache").glob("*.npy"))
    trainer = Trainer(tiny_config(cohort, cohort.parent / "run", epochs_phase1=1, epochs_phase2=0))
    assert trainer.cache.file == built  # reused, not rebuilt
    assert cli.main(["cache", str(cohort), "--shape", "0", "20", "24", "--quiet"]) == 2
    assert "--shape must be three sizes >= 1" in capsys.readouterr().err


def test_a_batch_in_use_is_never_overwritten_by_the_next(cohort):
    rows = rows_of(cohort)
    cache = open_cache(cohort, rows, SHAPE, progress=False)
    names = [volume_name(r) for r in rows]
    first = torch.from_numpy(cache.gather(names[:4]))
    kept = first.clone()
    second = cache.gather(names[4:8])  # first still referenced: a new buffer
    assert torch.equal(first, kept) and not np.shares_memory(first.numpy(), second)
    del first, second
    third = cache.gather(names[8:12])  # nothing references the earlier buffers: one is reused
    assert any(np.shares_memory(third, b) for b in cache._buffers)
    assert np.array_equal(third, np.stack([cache.gather([n]).copy()[0] for n in names[8:12]]))
