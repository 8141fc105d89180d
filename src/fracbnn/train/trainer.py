"""The training loop: the paper's steps in sequence, checkpointed and resumable.

SPEC section 3: step 1 trains float weights with 2-bit activations, step 2
binary weights (initialised from step 1), step 3 fractional gated
convolutions (initialised from step 2) with the threshold regulariser. A
recipe lists its steps; each one switches the SAME model definition with
``fracbnn.nn.set_conv_mode`` and starts from the previous step's final
weights with a fresh optimizer and learning-rate schedule.

Run folder::

    RUN_DIR/config.yaml            the fully resolved recipe
    RUN_DIR/metrics.jsonl          one record per epoch (all steps)
    RUN_DIR/tensorboard/           the same metrics for TensorBoard (optional extra)
    RUN_DIR/<step>/last.pt         rolling training state (every epoch and every N batches)
    RUN_DIR/<step>/epoch_XXX.pt    optional per-epoch copies
    RUN_DIR/<step>/final.pt        the step's trained model and test results (marks the step done)
    RUN_DIR/final.pt               the last step's model, for `fracbnn eval` / export
    RUN_DIR/results.json           test results of every step

Checkpoints are written atomically and loaded with ``weights_only=True``.
A run killed at any point (even SIGKILL mid-epoch) continues with
``--resume``; with in-memory data in deterministic mode it ends with exactly
the weights of an uninterrupted run, because the data order and augmentation
are pure functions of (seed, epoch, batch) and every other piece of state
(model, optimizer, schedule, scaler, RNG, running epoch sums) is in the
checkpoint. File-backed data read by worker processes replays the same order
but may draw other random crops (see docs/data.md).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import (atomic_write, check_state_dict, load_checkpoint, load_state_dict_strict, save_checkpoint,
                          stray_temp_files)
from ..errors import FracBNNError
from ..nn import FracConv2d, cpu_ops, gate_regularizer, reset_gate_statistics, set_conv_mode, sparsity_by_layer
from .allocator import keep_freed_memory
from .config import write_recipe
from .distill import TrainingLoss, build_teacher
from .distributed import DistContext, convert_batchnorm, setup_distributed
from .evaluate import autocast_context, evaluate, topk_correct
from .metrics import MetricsLogger
from .reproducibility import capture_rng_state, restore_rng_state, seed_everything, set_deterministic
from .runlock import RunLock
from .threads import choose_threads

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"


class NonFiniteLossError(FracBNNError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _frac_convs_in(model: nn.Module) -> bool:
    return any(isinstance(m, FracConv2d) for m in model.modules())


def log(msg: str, ctx: DistContext | None = None) -> None:
    if ctx is None or ctx.is_main:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data and model
def limit_dataset(ds, n: int | None):
    """The first ``n`` samples of ``ds``; ``ds`` itself when n is None or larger (``eval --limit``)."""
    if n is None or n >= len(ds):
        return ds
    return subset_dataset(ds, range(n))


def balanced_limit(ds, n: int | None):
    """``n`` samples of ``ds`` with every class equally represented (for ``data.train_limit``/``test_limit``).

    Each class contributes its first ``n // C`` samples in file order (the
    first ``n % C`` classes one more; a class with too few samples gives all
    it has and the rest is filled from the others), and the chosen samples
    keep the dataset's order. In-memory data (CIFAR, digits) is stored in
    mixed class order already and keeps its first ``n`` samples, so short runs
    stay comparable with earlier ones.
    """
    if n is None or n >= len(ds):
        return ds
    if getattr(ds, "in_memory", False):
        return limit_dataset(ds, n)
    labels = [int(v) for v in ds.labels]
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < n:  # round-robin over classes: the k-th sample of every class before any (k+1)-th
        added = False
        for members in by_class.values():
            if rank < len(members) and len(chosen) < n:
                chosen.append(members[rank])
                added = True
        if not added:
            break
        rank += 1
    return subset_dataset(ds, sorted(chosen))


def subset_dataset(ds, indices):
    if getattr(ds, "in_memory", False):
        return ds.subset(list(indices))
    return _Subset(ds, list(indices))


class _Subset:
    """Samples ``indices`` of a file-backed dataset; every other attribute is the dataset's."""

    def __init__(self, ds, indices):
        self.ds, self.indices = ds, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        if not 0 <= i < len(self.indices):
            raise IndexError(i)
        return self.ds[self.indices[i]]

    @property
    def labels(self):
        labels = self.ds.labels
        return [labels[i] for i in self.indices]

    @property
    def samples(self):
        return [self.ds.samples[i] for i in self.indices]

    def check_files(self, progress: bool = False) -> None:
        self.ds.check_files(progress=progress, indices=self.indices)

    def __getattr__(self, name):
        return getattr(self.ds, name)


def dataset_options(cfg: dict) -> dict:
    """The recipe's per-dataset options (imagefolder: image_size, mode) as load_dataset kwargs."""
    d = cfg["data"]
    kwargs = {}
    if d.get("image_size") is not None:
        kwargs["image_size"] = tuple(d["image_size"])
    if d.get("mode") is not None:
        kwargs["mode"] = d["mode"]
    return kwargs


def load_data(cfg: dict, check_files: bool = False, progress: bool = False):
    """(train, test) datasets of the recipe, limited; with ``check_files`` every file is decoded first."""
    from ..data import load_dataset

    d = cfg["data"]
    kwargs = dataset_options(cfg)
    train = load_dataset(d["name"], d["root"], split="train", download=d["download"], **kwargs)
    test = load_dataset(d["name"], d["root"], split="test", download=d["download"], **kwargs)
    shapes = [(int(ds.in_channels), *map(int, ds.image_size)) for ds in (train, test)]
    if shapes[0] != shapes[1]:
        raise FracBNNError(f"the {d['name']} training images are {'x'.join(map(str, shapes[0]))} but the test images "
                           f"are {'x'.join(map(str, shapes[1]))}; set data.image_size so both are resized alike")
    train, test = balanced_limit(train, d["train_limit"]), balanced_limit(test, d["test_limit"])
    if check_files:
        for ds in (train, test):
            if hasattr(ds, "check_files"):
                ds.check_files(progress=progress)
    return train, test


def build_model(cfg: dict, dataset) -> nn.Module:
    """The recipe's model, with num_classes / in_channels taken from the data unless set."""
    from ..models import create_model, model_options

    name, kwargs = cfg["model"]["name"], dict(cfg["model"]["kwargs"])
    try:
        options = model_options(name)
    except ValueError as e:
        raise FracBNNError(str(e)) from None
    for key, value in (("num_classes", dataset.num_classes), ("in_channels", dataset.in_channels)):
        if key in options:
            if key not in kwargs:
                kwargs[key] = int(value)
            elif int(kwargs[key]) != int(value):
                raise FracBNNError(f"model.kwargs.{key}={kwargs[key]} but the {cfg['data']['name']} data has "
                                   f"{value}; remove the option or fix it")
    try:
        model = create_model(name, **kwargs)
    except ValueError as e:
        raise FracBNNError(str(e)) from None
    model.input_size = (int(dataset.in_channels), *map(int, dataset.image_size))
    model.classes = [str(c) for c in dataset.classes]  # recorded in checkpoints (export names the outputs)
    return model


def resolve_flag(value, device: torch.device) -> bool:
    if value == "auto" or value is None:
        return device.type == "cuda"
    return bool(value)


def body_effective_bits(summary_rows: list[dict], gate: dict) -> float:
    """Effective activation bits (fracbnn.summary's rule) at the measured gate densities.

    ``gate`` comes from gate_statistics after evaluation, i.e. summed over every
    process and the whole test set.
    """
    from ..summary import summary_totals, with_lsb_densities

    densities = {k: v["density"] for k, v in gate.items() if v.get("total")}
    return summary_totals(with_lsb_densities(summary_rows, densities))["effective_activation_bits"]


def atomic_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f_src:
        atomic_write(dst, lambda f: shutil.copyfileobj(f_src, f))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Runs the steps of one recipe in one run folder (one process of a DDP job)."""

    def __init__(self, cfg: dict, run_dir: str | os.PathLike, ctx: DistContext, *, resume: bool = False,
                 only_steps: list[int] | None = None, init: str | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.resume = resume
        self.only_steps = only_steps
        self.init = init
        self.device = ctx.device
        rt = cfg["runtime"]
        self.amp = resolve_flag(rt["amp"], self.device)
        self.channels_last = resolve_flag(rt["channels_last"], self.device)
        self.progress = bool(rt["progress"]) and ctx.is_main

    # -------------------------------------------------------- setup
    def check_run_dir(self) -> None:
        """Read-only checks of the run folder: it can take a new run, or holds one to resume."""
        cfg_path = self.run_dir / CONFIG_FILE
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FracBNNError(f"--out {self.run_dir} is a file, not a folder; choose a folder for the run")
        if cfg_path.exists() and not self.resume:
            raise FracBNNError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose "
                               "another --out (nothing was overwritten)")
        if self.resume and not cfg_path.exists():
            raise FracBNNError(f"{self.run_dir} holds no run to resume ({CONFIG_FILE} missing); "
                               "start it without --resume")

    def open_run_dir(self) -> None:
        """Lock the folder (if not yet), delete stray temporary files, write the recipe (new runs)."""
        if self.ctx.is_main:
            if self.lock is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.lock = RunLock(self.run_dir).acquire()
                self.check_run_dir()  # another run may have started here while this one was validating
            for tmp in stray_temp_files(self.run_dir):
                tmp.unlink(missing_ok=True)
                log(f"removed {tmp} (left by an interrupted write)", self.ctx)
            if not self.resume:
                write_recipe(self.cfg, self.run_dir / CONFIG_FILE)
        self.ctx.barrier()
        self.metrics = MetricsLogger(self.run_dir, self.cfg["runtime"]["tensorboard"], enabled=self.ctx.is_main)

    def setup(self) -> None:
        """Everything that can fail on bad input (threads, data, model, initial weights, teacher): no writes."""
        cfg = self.cfg
        threads = self.resumed_threads() or choose_threads(cfg["runtime"]["threads"])
        torch.set_num_threads(threads[0])
        if self.device.type == "cpu":
            log(f"CPU threads: {threads[0]} ({threads[1]})", self.ctx)
        keep = cfg["runtime"].get("keep_freed_memory", "auto")
        if (self.device.type == "cpu") if keep in ("auto", None) else bool(keep):
            keep_freed_memory()
        seed_everything(cfg["seed"])
        set_deterministic(cfg["deterministic"], self.device)
        check = cfg["data"]["check_files"]
        check = str(cfg["data"]["name"]).lower() == "imagefolder" if check == "auto" else check
        self.train_ds, self.test_ds = load_data(cfg, check_files=check, progress=self.progress)
        model = build_model(cfg, self.train_ds)
        self.initial_state = copy.deepcopy(model.state_dict())
        self.check_initial_weights(model)
        if self.ctx.enabled:
            convert_batchnorm(model, self.device)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        note = cpu_ops.training_note(self.device, self.channels_last) if _frac_convs_in(model) else None
        if note:
            log(f"note: {note}", self.ctx)
        self.model = model
        teacher = build_teacher(cfg["distill"]["teacher"], self.device)
        self.criterion = TrainingLoss(teacher, cfg["distill"]["alpha"], cfg["distill"]["temperature"])

    def resumed_threads(self) -> tuple[int, str] | None:
        """A deterministic resumed run with ``threads: auto`` keeps the thread count it started with.

        CPU reductions may group sums by thread, so another count could change
        the last bits of the weights; the count is recorded in every last.pt.
        """
        if not (self.resume and self.cfg["deterministic"] and self.cfg["runtime"]["threads"] == "auto"):
            return None
        for step in self.cfg["steps"]:
            last = self.step_dir(step) / "last.pt"
            if last.is_file() and not (self.step_dir(step) / "final.pt").is_file():
                n = load_checkpoint(last).get("threads")
                if isinstance(n, int) and n >= 1:
                    return n, f"as when this deterministic run started ({last})"
        return None

    def selected_steps(self) -> list[int]:
        return self.only_steps if self.only_steps is not None else list(range(len(self.cfg["steps"])))

    def check_initial_weights(self, model: nn.Module) -> None:
        """Load and match every checkpoint a selected step will start from, before anything is written."""
        steps, selected = self.cfg["steps"], self.selected_steps()
        self._weights_cache: dict[str, dict] = {}
        for n, i in enumerate(selected):
            step = steps[i]
            sdir = self.step_dir(step)
            if self.resume and ((sdir / "final.pt").is_file() or (sdir / "last.pt").is_file()):
                continue
            if n == 0 and self.init:
                path, source = self.init, f"--init {self.init}"
            elif step["init"] not in ("previous", "none"):
                path, source = step["init"], f"steps[{i}].init {step['init']}"
            elif step["init"] == "previous" and i > 0 and n == 0:
                prev = self.step_dir(steps[i - 1]) / "final.pt"
                if not prev.is_file():
                    raise FracBNNError(f"step {step['name']} starts from the final weights of step "
                                       f"{steps[i - 1]['name']}, but {prev} does not exist; run that step first "
                                       "or pass --init CHECKPOINT")
                path, source = str(prev), str(prev)
            else:
                continue
            sd = load_checkpoint(path)["state_dict"]
            check_state_dict(model, sd, source)
            self._weights_cache[str(path)] = sd

    def _weights(self, path) -> dict:
        cached = getattr(self, "_weights_cache", {}).pop(str(path), None)
        return cached if cached is not None else load_checkpoint(path)["state_dict"]

    # -------------------------------------------------------- whole recipe
    def run(self) -> dict:
        self.check_run_dir()
        self.lock = None
        self.metrics = None
        try:
            if self.resume and self.ctx.is_main:  # refuse at once while the run is still alive elsewhere
                self.lock = RunLock(self.run_dir).acquire()
            self.setup()
            self.open_run_dir()
            return self.run_steps()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            if self.lock is not None:
                self.lock.release()

    def run_steps(self) -> dict:
        steps = self.cfg["steps"]
        selected = self.selected_steps()
        results = {}
        for i, step in enumerate(steps):
            if i not in selected:
                continue
            final = self.step_dir(step) / "final.pt"
            if self.resume and final.is_file():
                ckpt = load_checkpoint(final)
                results[step["name"]] = ckpt.get("results", {})
                log(f"[{step['name']}] already complete ({final}); skipping", self.ctx)
                continue
            results[step["name"]] = self.run_step(i, step, first=(i == selected[0]))
        if self.ctx.is_main and selected:
            last = self.step_dir(steps[max(selected)]) / "final.pt"
            if last.is_file():
                atomic_copy(last, self.run_dir / "final.pt")
            old = {}
            if (self.run_dir / RESULTS_FILE).is_file():
                try:
                    old = json.loads((self.run_dir / RESULTS_FILE).read_text())
                except json.JSONDecodeError:
                    old = {}
            atomic_write_text(self.run_dir / RESULTS_FILE, json.dumps({**old, **results}, indent=2) + "\n")
        return results

    def step_dir(self, step: dict) -> Path:
        return self.run_dir / step["name"]

    # -------------------------------------------------------- initial weights of a step
    def initial_weights(self, i: int, step: dict, first: bool) -> tuple[dict | None, str]:
        """(state dict or None for the builder's own init, description) for step ``i``."""
        steps = self.cfg["steps"]
        if first and self.init:
            return self._weights(self.init), f"--init {self.init}"
        if step["init"] == "none":
            return self.initial_state, "fresh initialisation"
        if step["init"] != "previous":
            return self._weights(step["init"]), step["init"]
        if i == 0:
            return self.initial_state, "fresh initialisation"
        prev = self.step_dir(steps[i - 1]) / "final.pt"
        if not prev.is_file():
            raise FracBNNError(f"step {step['name']} starts from the final weights of step {steps[i - 1]['name']}, "
                               f"but {prev} does not exist; run that step first or pass --init CHECKPOINT")
        return self._weights(prev), str(prev)

    # -------------------------------------------------------- one step
    def run_step(self, i: int, step: dict, first: bool) -> dict:
        cfg, ctx, device = self.cfg, self.ctx, self.device
        model = self.model
        sdir = self.step_dir(step)
        last = sdir / "last.pt"
        mode = step["conv_mode"]
        n_frac = set_conv_mode(model, mode) if mode else 0
        if mode and n_frac == 0:
            log(f"[{step['name']}] note: {cfg['model']['name']} has no fractional convolutions; "
                f"conv_mode {mode} changes nothing", ctx)
        for m in model.modules():
            if isinstance(m, FracConv2d):
                m.threshold.requires_grad_(m.mode == "frac")
        gated = mode == "frac" and step["gate_target"] is not None and n_frac > 0

        loader = self.make_train_loader(i)
        test_loader = self.make_test_loader()
        epochs = step["epochs"]
        total_iters = max(1, epochs * len(loader))
        params = [p for p in model.parameters() if p.requires_grad]
        o = cfg["optim"]
        opt = torch.optim.Adam(params, lr=step["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                               weight_decay=step["weight_decay"])
        if o["schedule"] == "linear":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _LinearDecay(total_iters))
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _Constant())
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")

        start_epoch, start_batch, global_step = 0, 0, 0
        running = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        if self.resume and last.is_file():
            state = load_checkpoint(last, map_location="cpu")
            load_state_dict_strict(model, state["state_dict"], str(last))
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            restore_rng_state(state.get("rng"))
            start_epoch, start_batch = int(state["epoch"]), int(state["batch"])
            global_step = int(state["global_step"])
            running = state["running"].to(device=device, dtype=torch.float64)
            log(f"[{step['name']}] resuming from {last} at epoch {start_epoch + 1}, batch {start_batch}", ctx)
        else:
            sd, source = self.initial_weights(i, step, first)
            load_state_dict_strict(model, sd, source)
            log(f"[{step['name']}] conv mode {mode or '-'}, {epochs} epochs, lr {step['lr']:g}, weight decay "
                f"{step['weight_decay']:g}" + (f", gate target {step['gate_target']:g}" if gated else "")
                + f"; weights from {source}", ctx)
        if ctx.is_main:
            self.metrics.truncate_after(step["name"], start_epoch + 1)

        net = model
        if ctx.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        epochs_before = sum(s["epochs"] for s in cfg["steps"][:i])
        summary_rows = self.summary_rows()
        every = cfg["runtime"]["checkpoint_every"]
        val = None
        record = None

        def save_state(path, epoch, batch, running_):
            save_checkpoint(path, model, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            scaler=scaler.state_dict() if scaler.is_enabled() else None,
                            rng=capture_rng_state(), recipe_step=step["name"], step_index=i, epoch=epoch,
                            batch=batch, global_step=global_step, running=running_.cpu(), config=cfg,
                            threads=torch.get_num_threads(), dataset=self.dataset_record())

        for epoch in range(start_epoch, epochs):
            loader.set_epoch(epoch)
            net.train()
            reset_gate_statistics(model)
            # the schedule's value at the epoch's first iteration, also when resuming mid-epoch
            lr_at_start = sched.base_lrs[0] * sched.lr_lambdas[0](epoch * len(loader))
            bad = torch.zeros((), dtype=torch.bool, device=device)
            t0, seen = time.perf_counter(), 0
            bar = self.bar(len(loader), start_batch, f"{step['name']} {epoch + 1}/{epochs}")
            for b, (images, labels) in enumerate(loader.iter_from(start_batch), start=start_batch):
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                with autocast_context(device, self.amp):
                    logits = net(images)
                    loss = self.criterion(logits, labels, images)
                total = loss + (gate_regularizer(model, step["gate_target"], step["gate_weight"]).to(loss.device)
                                if gated else 0.0)
                opt.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                global_step += 1
                with torch.no_grad():
                    n = labels.numel()
                    bad |= ~torch.isfinite(total.detach())
                    running += torch.stack([loss.detach().double() * n, topk_correct(logits.detach(), labels,
                                            (1,))[0].double(), torch.tensor(float(n), dtype=torch.float64,
                                                                             device=device)])
                seen += n
                done = b + 1
                mid_save = every and done % every == 0 and done < len(loader)
                if done % 20 == 0 or mid_save or done == len(loader):
                    self.check_finite(bad, step, epoch, done, last)
                    if bar is not None:
                        r = running.tolist()
                        bar.set_postfix(loss=f"{r[0] / max(r[2], 1):.3f}", acc=f"{r[1] / max(r[2], 1):.3f}",
                                        refresh=False)
                if mid_save:
                    if ctx.is_main:
                        save_state(last, epoch, done, running)
                    ctx.barrier()
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            self.check_finite(bad, step, epoch, len(loader), last)
            train_time = time.perf_counter() - t0
            seen_t = torch.tensor([float(seen)], dtype=torch.float64, device=device)
            ctx.all_reduce_sum(seen_t)
            totals = ctx.all_reduce_sum(running.clone()).tolist()
            val = evaluate(model, test_loader, device, amp=self.amp, dist=ctx)
            gate = val.pop("gate")
            record = {
                "step": step["name"], "step_index": i, "conv_mode": mode, "epoch": epoch + 1, "epochs": epochs,
                "global_epoch": epochs_before + epoch + 1, "global_step": global_step,
                "train_loss": totals[0] / max(totals[2], 1), "train_top1": totals[1] / max(totals[2], 1),
                "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                "val_count": val["count"], "lr": lr_at_start,
                "images_per_sec": seen_t.item() / train_time if train_time > 0 else None,
                "epoch_seconds": train_time,
                "sparsity": sparsity_by_layer(gate) if mode == "frac" else {},
                "effective_activation_bits": body_effective_bits(summary_rows, gate),
            }
            if record["sparsity"]:
                record["mean_sparsity"] = sum(record["sparsity"].values()) / len(record["sparsity"])
            self.metrics.log(record)
            log(self.epoch_line(record), ctx)
            running.zero_()
            start_batch = 0
            if ctx.is_main:
                save_state(last, epoch + 1, 0, running)
                if cfg["runtime"]["keep_epoch_checkpoints"]:
                    atomic_copy(last, sdir / f"epoch_{epoch + 1:03d}.pt")
            ctx.barrier()

        if val is None:  # zero epochs left (or requested): still measure the model
            val = evaluate(model, test_loader, device, amp=self.amp, dist=ctx)
            gate = val.pop("gate")
            sparsity = sparsity_by_layer(gate) if mode == "frac" else {}
            bits = body_effective_bits(summary_rows, gate)
        else:  # the last epoch's evaluation
            sparsity, bits = record["sparsity"], record["effective_activation_bits"]
        results = {"top1": val["top1"], "top5": val["top5"], "loss": val["loss"], "count": val["count"],
                   "conv_mode": mode, "epochs": epochs, "sparsity": sparsity, "effective_activation_bits": bits}
        if ctx.is_main:
            save_checkpoint(sdir / "final.pt", model, config=cfg, recipe_step=step["name"], step_index=i,
                            results=results, dataset=self.dataset_record())
        ctx.barrier()
        log(f"[{step['name']}] done: test top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%"
            f"  ({results['count']} images) -> {sdir / 'final.pt'}", ctx)
        return results

    # -------------------------------------------------------- helpers
    def dataset_record(self) -> dict:
        """The checkpoint's ``dataset``: name and image options, so eval/export can load the same data."""
        return {"name": self.cfg["data"]["name"], **{k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in dataset_options(self.cfg).items()}}

    def make_train_loader(self, i: int):
        from ..data import make_loader

        d = self.cfg["data"]
        augment = None if d["augment"] in (None, "none") else d["augment"]
        return make_loader(self.train_ds, d["batch_size"], train=True, augment=augment,
                           seed=self.cfg["seed"] * 16 + i, rank=self.ctx.rank, world_size=self.ctx.world_size,
                           num_workers=d["num_workers"])

    def make_test_loader(self):
        from ..data import make_loader

        d = self.cfg["data"]
        bs = d["eval_batch_size"]
        bs -= bs % self.ctx.world_size
        return make_loader(self.test_ds, max(bs, self.ctx.world_size), train=False, rank=self.ctx.rank,
                           world_size=self.ctx.world_size, num_workers=d["num_workers"])

    def summary_rows(self) -> list[dict]:
        from ..summary import summarize

        model = self.model
        return summarize(model, input_size=model.input_size, lsb_density=1.0).rows

    def check_finite(self, bad: torch.Tensor, step: dict, epoch: int, batch: int, last: Path) -> None:
        if self.ctx.any(bool(bad.item())):
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the loss became NaN or infinite in step {step['name']}, epoch {epoch + 1}, by batch {batch}; "
                f"{kept} (not overwritten); lower the learning rate (optim.lr) or check the data")

    def bar(self, total: int, initial: int, desc: str):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                    unit="batch")

    @staticmethod
    def epoch_line(r: dict) -> str:
        parts = [f"[{r['step']}] epoch {r['epoch']}/{r['epochs']}: train loss {r['train_loss']:.4f} "
                 f"top-1 {100 * r['train_top1']:.2f}% | test loss {r['val_loss']:.4f} top-1 "
                 f"{100 * r['val_top1']:.2f}% top-5 {100 * r['val_top5']:.2f}%"]
        if r.get("mean_sparsity") is not None:
            parts.append(f"mean LSB sparsity {100 * r['mean_sparsity']:.1f}%")
        if r["effective_activation_bits"] < 32:
            parts.append(f"{r['effective_activation_bits']:.3f} act bits")
        if r.get("images_per_sec"):
            parts.append(f"{r['images_per_sec']:.0f} img/s")
        parts.append(f"lr {r['lr']:.2e}")
        return " | ".join(parts)


class _LinearDecay:
    """lr factor 1 - t/T: linear decay to 0 over the step's iterations (a picklable-free callable)."""

    def __init__(self, total: int):
        self.total = total

    def __call__(self, t: int) -> float:
        return max(0.0, 1.0 - t / self.total)


class _Constant:
    def __call__(self, t: int) -> float:
        return 1.0


def train(cfg: dict, run_dir: str | os.PathLike, *, resume: bool = False, only_steps: list[int] | None = None,
          init: str | None = None) -> dict:
    """Run a resolved recipe in ``run_dir`` (joining a torchrun process group if there is one)."""
    ctx = setup_distributed(cfg["device"])
    try:
        return Trainer(cfg, run_dir, ctx, resume=resume, only_steps=only_steps, init=init).run()
    finally:
        ctx.close()


__all__ = ["NonFiniteLossError", "Trainer", "build_model", "load_data", "train"]
