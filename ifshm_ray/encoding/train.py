"""Per-worker loop of the encoder fine-tuning (Ray Train + DeepSpeed ZeRO) and the data-set helpers it shares with
``jobs/finetune_encoder.py`` (the launcher). Lives in the package so that Ray workers can import it."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def read_split(path: str | Path, split: str, column: str = "split") -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, filters=[(column, "=", split)])
    return table.to_pylist()


def refit_task_heads(model, real_train: dict[str, list[dict]], l2: float, batch: int = 32) -> None:
    """Each task head := an L2 logistic regression on the frozen states of its training part (standardisation
    folded into the linear layer); a class absent from the training part gets a bias of -30 (never predicted)."""
    import torch

    from ifshm_ray.encoding.linear import LogisticRegression

    model.eval()
    for task, recs in real_train.items():
        with torch.no_grad():
            S = np.concatenate([model([to_context(r) for r in recs[i:i + batch]]).cpu().numpy()
                                for i in range(0, len(recs), batch)])
        y = np.asarray([r["label_id"] for r in recs])
        lr = LogisticRegression(l2=l2).fit(S, y)
        k = len(model.tasks[task])
        W = np.zeros((k, S.shape[1]))
        b = np.full(k, -30.0)
        Wc = lr.W / lr.std[:, None]                      # [d, present classes]
        W[lr.classes_] = Wc.T
        b[lr.classes_] = lr.b - lr.mean @ Wc
        head = model.task_heads[task]
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))


def evaluate_tasks(model, real_dataset: str | Path, tasks: dict, batch: int = 32) -> dict:
    """Macro-F1 and accuracy of every real task's head on its held-out part (``part == 'holdout'``)."""
    import torch

    from ifshm_ray.encoding.calibration import macro_f1

    by_task: dict[str, list[dict]] = {}
    for r in read_split(real_dataset, "holdout", column="part"):
        by_task.setdefault(r["task"], []).append(r)
    out = {}
    model.eval()
    with torch.no_grad():
        for task in sorted(tasks):
            recs = by_task.get(task, [])
            if not recs:
                continue
            pred = []
            for i in range(0, len(recs), batch):
                s = model([to_context(r) for r in recs[i:i + batch]])
                pred += model.task_logits(s, task).argmax(1).cpu().tolist()
            y = np.asarray([r["label_id"] for r in recs])
            pred = np.asarray(pred)
            out[task] = {"macro_f1": macro_f1(y, pred, labels=sorted(set(y.tolist()))),
                         "accuracy": float((pred == y).mean()), "n": int(len(y))}
    return out


def to_context(rec: dict):
    from ifshm_ray.encoding.modal import EncodedContext

    return EncodedContext.from_record({**rec, "template_counts": json.loads(rec["template_counts"])})


def _deepspeed_cpu_setup(use_shm_comm: bool) -> None:
    """Without ``use_shm_comm``, DeepSpeed's shared-memory collectives op (a ~50 s JIT compile, only a speed-up)
    is declared unavailable, so collectives go through plain torch.distributed (gloo / NCCL)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "ifshm-ray" / "torch_extensions"))
    if not use_shm_comm:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _batches(n: int, batch: int, rank: int, world: int, seed: int):
    """Shuffled index batches of this rank; every rank gets the same number of steps (short shards wrap)."""
    idx = np.random.default_rng(seed).permutation(n)
    per_rank = -(-n // world)
    shard = np.resize(idx[rank::world], per_rank) if n else idx
    return [shard[i:i + batch] for i in range(0, per_rank, batch)]


def evaluate(model, recs: list[dict], batch: int = 32, mode: str | None = None):
    """Logits and states of records (no gradients; LM outputs cached per text)."""
    import torch

    states, logits = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(recs), batch):
            s, z = model([to_context(r) for r in recs[i:i + batch]], mode=mode, with_logits=True)
            states.append(s.cpu().numpy())
            logits.append(z.cpu().numpy())
    d = model.config.state_dim
    return (np.concatenate(logits) if logits else np.zeros((0, len(model.fault_types))),
            np.concatenate(states) if states else np.zeros((0, d)))


def train_worker(job: dict) -> None:
    """Per-worker loop (Ray Train): build the encoder, ``deepspeed.initialize``, train, then rank 0 evaluates and
    reports the checkpoint."""
    import deepspeed
    import ray.train
    import torch

    from ifshm_ray.encoding.calibration import expected_calibration_error, macro_f1, softmax
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    ft = job["finetune"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(ft["torch_threads"]))
    _deepspeed_cpu_setup(bool(ft.get("deepspeed_shm_comm", False)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    train = [r for r in read_split(job["dataset"], "train") if r["label_id"] >= 0]
    enc_cfg = EncoderConfig(**job["encoder"])
    labels = job["labels"]

    tasks = job.get("tasks") or {}
    real_train: dict[str, list[dict]] = {}
    if job.get("real_dataset"):
        for r in read_split(job["real_dataset"], "train", column="part"):
            real_train.setdefault(r["task"], []).append(r)
    real_weight = float((job.get("real") or {}).get("loss_weight", 1.0))
    real_batch = int((job.get("real") or {}).get("batch_size", 16))
    # real losses through the shared encoder only when configured; otherwise the heads are fitted after training on
    # the frozen states, and the fine-tuning steps are exactly the simulator-only ones (RealTrainConfig)
    joint = bool((job.get("real") or {}).get("shared_encoder_update", False))

    def build(with_tasks: bool = True):
        m = SemanticEncoder.build(enc_cfg, labels, split=job.get("split"), tasks=tasks if with_tasks else None)
        m.modal.load_miner_state(Path(job["miner"]).read_bytes())
        m.fit_feature_norm(np.stack([r["features"] for r in train]))
        return m

    # without joint real losses the trained model has no task heads at all: building them draws from the global
    # torch RNG (whose later draws are the LoRA dropout masks) and adds parameters to the ZeRO partitions, which
    # made a real-heads run's simulator head differ from the simulator-only run's (measured); the heads are added
    # after training, on rank 0
    model = build(with_tasks=joint).to(device)
    adapter_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [{"params": head_params, "lr": ft["lr"]}]
    if adapter_params:
        groups.append({"params": adapter_params, "lr": ft["lora_lr"]})
    optimizer = torch.optim.AdamW(groups, weight_decay=ft["weight_decay"])
    ds_config = {
        "train_micro_batch_size_per_gpu": int(ft["batch_size"]),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": int(ft["zero_stage"])},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)

    t0 = time.time()
    losses = []
    for epoch in range(int(ft["epochs"])):
        engine.train()
        for step, idx in enumerate(_batches(len(train), int(ft["batch_size"]), rank, world, seed=1000 + epoch)):
            recs = [train[i] for i in idx]
            _, logits = engine([to_context(r) for r in recs], with_logits=True)
            y = torch.as_tensor([r["label_id"] for r in recs], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, y)
            # multi-task: one batch of each real data set's training part through its own head
            rng = np.random.default_rng([1000 + epoch, step, rank])
            for task in sorted(real_train) if joint else ():
                rows = real_train[task]
                pick = rng.choice(len(rows), size=min(real_batch, len(rows)), replace=False)
                rr = [rows[i] for i in pick]
                states = engine([to_context(r) for r in rr])
                yt = torch.as_tensor([r["label_id"] for r in rr], device=states.device)
                tl = torch.nn.functional.cross_entropy(engine.module.task_logits(states, task), yt)
                loss = loss + real_weight * tl
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
            if rank == 0 and step % 10 == 0:
                logger.info("epoch %d step %d loss %.4f (%.1f s)", epoch, step, losses[-1], time.time() - t0)
        logger.info("rank %d epoch %d mean loss %.4f", rank, epoch, float(np.mean(losses[-10:])))
    train_time = time.time() - t0

    # Consolidate the weights (ZeRO-3 partitions them; all ranks must join the gather).
    if int(ft["zero_stage"]) == 3:
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    metrics = {"train_time_s": train_time, "final_train_loss": float(np.mean(losses[-10:])) if losses else None,
               "world_size": world, "zero_stage": int(ft["zero_stage"])}
    checkpoint = None
    if rank == 0:
        final = build()
        missing, unexpected = final.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("task_heads.") for k in missing):
            raise RuntimeError(f"trained state does not fit the final encoder: missing {missing}, "
                               f"unexpected {unexpected}")
        final.clear_cache()
        val = [r for r in read_split(job["dataset"], "val") if r["label_id"] >= 0]
        test = [r for r in read_split(job["dataset"], "test") if r["label_id"] >= 0]
        t1 = time.time()
        z_tr, s_tr = evaluate(final, train)
        z_va, _ = evaluate(final, val)
        z_te, s_te = evaluate(final, test)
        eval_time = time.time() - t1
        y_tr = np.asarray([r["label_id"] for r in train])
        y_va = np.asarray([r["label_id"] for r in val])
        y_te = np.asarray([r["label_id"] for r in test])
        final.fit_prototypes(s_tr, y_tr)
        ece_before = expected_calibration_error(softmax(z_te), y_te)
        temperature = final.calibrate(z_va, y_va) if len(y_va) else 1.0
        pred = z_te.argmax(1)
        stats = final.cache_stats()
        n_items = stats["items_total"]
        metrics.update({
            "accuracy": float((pred == y_te).mean()) if len(y_te) else None,
            "macro_f1": macro_f1(y_te, pred, labels=list(range(len(labels)))) if len(y_te) else None,
            "val_accuracy": float((z_va.argmax(1) == y_va).mean()) if len(y_va) else None,
            "temperature": temperature,
            "test_ece_before": ece_before,
            "test_ece_after": expected_calibration_error(softmax(z_te, temperature), y_te),
            "template_cache_hit_rate": stats["hit_rate"],
            "template_item_reuse_rate": 1.0 - stats["misses"] / n_items if n_items else 0.0,
            "template_cache_entries": stats["entries"],
            "eval_contexts_per_s": (len(train) + len(val) + len(test)) / max(eval_time, 1e-9),
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
        })
        if job.get("real_dataset"):
            metrics["real_shared_encoder_update"] = joint
            if joint:
                metrics["real_tasks_joint"] = evaluate_tasks(final, job["real_dataset"], tasks)
            if not joint or (job.get("real") or {}).get("refit_heads", True):
                refit_task_heads(final, real_train, float(job["real"].get("head_l2", 1e-2)))
            metrics["real_tasks"] = evaluate_tasks(final, job["real_dataset"], tasks)
        tmp = Path(tempfile.mkdtemp(prefix="enc-ckpt-"))
        final.save(tmp)
        if job.get("real_dataset"):  # the tasks and their held-out rows travel with the checkpoint
            src = Path(job["real_dataset"]).parent / "real_tasks.json"
            (tmp / "real_tasks.json").write_text(src.read_text())
        (tmp / "train_metrics.json").write_text(json.dumps(metrics))
        checkpoint = ray.train.Checkpoint.from_directory(str(tmp))
    ray.train.report(metrics, checkpoint=checkpoint)


