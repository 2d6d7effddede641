"""Batches for training: :class:`DeviceBatches` (a set held on the device, drawn by index) and
:class:`StreamBatches` (a set streamed through a DataLoader, from files or host memory), which walk
the same seeded permutation per epoch and resume from (epoch, position); the memory budgets and
:func:`choose_mode` that pick between them; and :func:`make_batches`, which builds the one chosen."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import torch

from gancli.data.base import ImageData, LazySource
from gancli.data.pixels import _cpus, _local_processes
from gancli.errors import GancliError


def epoch_permutation(seed: int, epoch: int, n: int,
                      classes: torch.Tensor | None = None) -> torch.Tensor:
    """The order of epoch `epoch`: a function of (seed, epoch) only, so runs resume exactly.

    With `classes` (int64 labels, N), the order is class-balanced instead: n draws in which every
    class present takes n / K of the positions (the remainder to classes drawn at random), each
    class walking its own images in a fresh random order and again from the start when they run
    out. A conditional model's fakes have uniform labels; balanced reals give D the same label
    marginal, and the rare classes as many real examples per step as the common ones.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if classes is None:
        return torch.randperm(n, generator=g)
    return _balanced_order(g, n, classes.cpu())


def _balanced_order(g: torch.Generator, n: int, classes: torch.Tensor) -> torch.Tensor:
    present = torch.unique(classes)
    k = len(present)
    slots = torch.cat([present.repeat(n // k), present[torch.randperm(k, generator=g)[: n % k]]])
    slots = slots[torch.randperm(n, generator=g)]
    order = torch.empty(n, dtype=torch.int64)
    for c in present.tolist():
        members = (classes == c).nonzero().squeeze(1)
        where = (slots == c).nonzero().squeeze(1)
        rounds = -(-len(where) // len(members))
        picks = torch.cat([members[torch.randperm(len(members), generator=g)]
                           for _ in range(rounds)])
        order[where] = picks[: len(where)]
    return order


def balance_labels(labels: torch.Tensor | None, balance: bool) -> torch.Tensor | None:
    """The labels a balanced order follows, or None for the plain permutation; one clear error
    for a data set without labels."""
    if not balance:
        return None
    if labels is None:
        raise GancliError("balance_classes needs a labelled data set (its labels decide the "
                          "draws); this one has none: drop --balance-classes")
    return labels.cpu()


def _check_batch(n: int, batch_size: int, world_size: int) -> int:
    if n < batch_size * world_size:
        raise GancliError(f"the data set has {n} images, fewer than one batch "
                          f"({batch_size} x {world_size} processes): lower --batch-size")
    return n // (batch_size * world_size)


class DeviceBatches:
    """Batches drawn by index from one uint8 tensor that lives on the training device.

    Each epoch is a fresh permutation from (seed, epoch), so a run is reproducible and resumable
    from (epoch, position); each process takes its own slice of every permutation, so ranks see
    different images.
    """

    mode = "device"

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, balance: bool = False) -> None:
        self.steps_per_epoch = _check_batch(len(data), batch_size, world_size)
        self.classes = balance_labels(data.labels, balance)
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    @property
    def where(self) -> str:
        return f"held on {self.device}"

    def _permutation(self) -> torch.Tensor:
        return epoch_permutation(self.seed, self.epoch, self.images.shape[0],
                                 self.classes).to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self._permutation()
        per_step = self.batch_size * self.world_size
        start = self.position * per_step + self.rank * self.batch_size
        idx = self._perm[start: start + self.batch_size]
        self.position += 1
        x = self.images.index_select(0, idx).float().div_(127.5).sub_(1.0)
        y = None if self.labels is None else self.labels.index_select(0, idx)
        return x, y

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


class _RankBatches:
    """An endless batch sampler: this rank's slice of each epoch's permutation, from (epoch,
    position) on, exactly the indices :class:`DeviceBatches` would draw."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world_size: int,
                 epoch: int, position: int, classes: torch.Tensor | None = None) -> None:
        self.n, self.batch_size, self.seed, self.classes = n, batch_size, seed, classes
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = epoch, position
        self.steps = n // (batch_size * world_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, pos, perm = self.epoch, self.position, None
        while True:
            if pos >= self.steps:
                epoch, pos, perm = epoch + 1, 0, None
            if perm is None:
                perm = epoch_permutation(self.seed, epoch, self.n, self.classes)
            start = pos * self.batch_size * self.world_size + self.rank * self.batch_size
            yield perm[start: start + self.batch_size].tolist()
            pos += 1


def _as_is(batch: Any) -> Any:
    # Datasets here return whole batches from __getitems__: nothing to collate.
    return batch


def default_workers(world_size: int = 1) -> int:
    """DataLoader workers per process: the machine's cores shared by its processes, at most 8,
    leaving one core for the training process itself."""
    per = _cpus() // min(max(1, world_size), _local_processes())
    return max(1, min(8, per - 1))


class _TensorImages(torch.utils.data.Dataset):
    """An in-memory ImageData as a Dataset with whole-batch fetches, for streaming it."""

    def __init__(self, data: ImageData) -> None:
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None, list]:
        t = torch.as_tensor(idx, dtype=torch.int64)
        return self.images[t], None if self.labels is None else self.labels[t], []


class StreamBatches:
    """Batches streamed through a DataLoader: from a :class:`LazySource` (a folder of files or a
    ``datasets`` Arrow table, decoded in worker processes) or from an :class:`ImageData` in host
    memory, pinned and copied to the device per batch. Same interface, order and state as
    :class:`DeviceBatches`.

    Exact on resume: the batch sequence is a function of (seed, epoch, position, batch size,
    world size) alone, so a resumed run sees what an uninterrupted one would have seen (an
    unreadable file's stand-in aside). Each rank reads only its own slice of every epoch's
    permutation, so no two ranks read the same image in an epoch. Prefetched batches are not
    counted as consumed.
    """

    mode = "stream"

    def __init__(self, source: ImageData | LazySource, batch_size: int, device: torch.device,
                 *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int | None = None, say: Callable[[str], None] | None = None,
                 balance: bool = False) -> None:
        self.steps_per_epoch = _check_batch(len(source), batch_size, world_size)
        self.classes = balance_labels(source.labels, balance)
        self.lazy = isinstance(source, LazySource)
        self.dataset = source if self.lazy else _TensorImages(source)
        self.n = len(source)
        self.device = torch.device(device)
        if num_workers is None:
            # In memory, a batch is one index_select: workers would only add copies.
            num_workers = default_workers(world_size) if self.lazy else 0
        self.num_workers = num_workers
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.position = 0, 0
        self.unreadable: set[str] = set()   # files that failed to decode, each counted once
        self._say = say
        self._it: Iterator[Any] | None = None

    @property
    def where(self) -> str:
        w = self.num_workers
        how = f"{w} loader worker{'s' if w > 1 else ''}" if w else "host memory"
        return (f"streamed to {self.device} from "
                f"{self.dataset.stored if self.lazy else 'memory'} ({how})")

    def _start(self) -> Iterator[Any]:
        sampler = _RankBatches(self.n, self.batch_size, self.seed, self.rank, self.world_size,
                               self.epoch, self.position, self.classes)
        kw: dict[str, Any] = {}
        if self.num_workers:
            kw = {"prefetch_factor": 4, "persistent_workers": False}
        # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's
        # global stream each time it starts, and a resumed run starts it at another step.
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=_as_is,
                                         num_workers=self.num_workers,
                                         generator=torch.Generator().manual_seed(self.seed),
                                         pin_memory=self.device.type == "cuda", **kw)
        return iter(dl)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._it is None:
            self._it = self._start()
        x, y, bad = next(self._it)
        # Mirror the sampler's walk, so state_dict names the next batch to be drawn.
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self.position += 1
        if bad:
            self._report(bad, x is None)
        x = x.to(self.device, non_blocking=True).float().div_(127.5).sub_(1.0)
        y = None if y is None else y.to(self.device, non_blocking=True)
        return x, y

    def _report(self, bad: list[str], fatal: bool) -> None:
        if fatal:
            raise GancliError(f"none of the {self.batch_size} images of a batch could be read "
                              f"(e.g. {bad[0]})")
        new = [p for p in bad if p not in self.unreadable]
        self.unreadable.update(new)
        for p in new:
            n = len(self.unreadable)
            if self._say is not None and n <= 3:
                more = "; further ones are counted, not shown" if n == 3 else ""
                self._say(f"note: unreadable image file {p} skipped (another image of its "
                          f"batch stands in){more}")

    @property
    def skipped(self) -> int:
        """How many distinct unreadable files streaming has met so far."""
        return len(self.unreadable)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.close()

    def close(self) -> None:
        """Stop the loader's workers (they also stop when this object is dropped)."""
        self._it = None


def host_budget() -> int:
    """Bytes of host memory a data set may take: half of what is available, shared by the
    processes on this machine."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            avail = 4 << 30
    return avail // 2 // _local_processes()


def device_budget(device: torch.device | str) -> int:
    """Bytes a device-resident data set may take: a quarter of the GPU's free memory (the
    networks, activations and optimiser state need the rest); on the CPU, the host budget."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 4
    return host_budget()


def data_bytes(source: ImageData | LazySource) -> int:
    """The uint8 size of a data set once decoded: N x C x H x W."""
    if isinstance(source, LazySource):
        return len(source) * source.channels * source.size ** 2
    return source.images.numel()


def choose_mode(source: ImageData | LazySource, device: torch.device | str, mode: str = "auto",
                budget: int | None = None) -> str:
    """"device" or "stream". A forced mode wins; "auto" keeps an in-memory set on the device
    when its decoded size fits `budget` (default :func:`device_budget`) and streams otherwise.
    A lazily opened source (folder, Arrow table) streams: it was left lazy because it does not
    fit in memory."""
    if mode not in ("auto", "device", "stream"):
        raise GancliError(f"data.stream must be auto, device or stream, got '{mode}'")
    if mode != "auto":
        return mode
    if isinstance(source, LazySource):
        return "stream"
    limit = device_budget(device) if budget is None else budget
    return "device" if data_bytes(source) <= limit else "stream"


def make_batches(source: ImageData | LazySource, batch_size: int, device: torch.device | str,
                 *, seed: int = 0, rank: int = 0, world_size: int = 1, mode: str = "auto",
                 budget: int | None = None, num_workers: int | None = None,
                 say: Callable[[str], None] | None = None,
                 balance: bool = False) -> DeviceBatches | StreamBatches:
    """Batches for training: :class:`DeviceBatches` or :class:`StreamBatches` as
    :func:`choose_mode` decides. Both give (float images in [-1, 1], int64 labels or None) on
    `device` and share steps_per_epoch, mode, where, state_dict() and load_state_dict().
    `say` hears the loader's notes (skipped files and the like); `balance` draws the classes
    equally often (:func:`epoch_permutation`)."""
    device = torch.device(device)
    chosen = choose_mode(source, device, mode, budget)
    if say is not None:
        for note in source.notes:
            say(f"note: {note}")
    if chosen == "device":
        data = source.load() if isinstance(source, LazySource) else source
        if say is not None and data is not source:
            for note in data.notes[len(source.notes):]:
                say(f"note: {note}")
        return DeviceBatches(data, batch_size, device, seed=seed, rank=rank,
                             world_size=world_size, balance=balance)
    return StreamBatches(source, batch_size, device, seed=seed, rank=rank, world_size=world_size,
                         num_workers=num_workers, say=say, balance=balance)
