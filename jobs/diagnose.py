"""Diagnose real incidents with a fine-tuned encoder: a folder of a real labelled set, or one window.

How to run (from the repo root)::

    # every sample of a folder in the layout of ../shared/data/openstack_fault_injection_fse2019
    DATA=../shared/data/openstack_fault_injection_fse2019
    .venv/bin/python jobs/diagnose.py --data $DATA --encoder-checkpoint results/encoder
    .venv/bin/python jobs/diagnose.py --data $DATA --encoder-checkpoint results/encoder --json   # one JSON object
    # one telemetry window (JSON file in the ifshm.telemetry/v1 schema)
    .venv/bin/python jobs/diagnose.py --telemetry window.json --encoder-checkpoint results/encoder
    # on a cluster: the LM sharded over 2 GPUs of one node
    .venv/bin/python jobs/diagnose.py --data ... --encoder-checkpoint ... --address auto --num-gpus 2 --tensor-parallel 2

The language model runs in the encoder actor pool (:class:`ifshm_ray.encoding.service.EncoderPool`, on the
cluster of ``--address`` or a local Ray started here): ``--num-actors`` replicas, ``--num-cpus`` each,
``--num-gpus`` per replica shared by its ``--tensor-parallel`` ranks (DeepSpeed inference). A missing checkpoint,
a missing ``samples.json``, a malformed folder or telemetry window is reported (exit status 2) before Ray starts;
so is a loghub log-parsing folder (``loghub_openstack_2k``: no fault labels, nothing to score).

A Nezha TrainTicket folder (``nezha_trainticket_fse2023``: pod metrics, the spans of the minute after injection and,
for return / exception faults, the pods' logs; labels: fault type and root-cause service) goes through the same
actor pool::

    .venv/bin/python jobs/diagnose.py --data ../shared/data/nezha_trainticket_fse2023 \
        --encoder-checkpoint results/encoder --json

It is a handful of samples, reported as context with 95 % intervals (bootstrap over samples, and Wilson), no bar:
the fault type (the encoder's diagnosis of the whole window through the documented map
``ifshm_ray.encoding.real_data.SIM_TO_NEZHA_FAULT``, or ``--head loo``), and the root-cause service top-1 / top-3
of the encoder (every service's own window ranked by ``1 - P(healthy)``) beside the unsupervised metric-shift
ranking, measured in the same run. ``--json``: one JSON object with ``fault_type: {accuracy, macro_f1,
macro_f1_ci95}`` and ``root_cause: {encoder, metric_shift}: {top1, top3}``, each ``{value, k, n, wilson_ci95,
bootstrap_ci95}``.

A Failure-Dataset-OpenStack folder (``openstack_failure_dataset_jss2021`` or one campaign folder of it) is read in
this process (no Ray)::

    .venv/bin/python jobs/diagnose.py --data ../shared/data/openstack_failure_dataset_jss2021 \
        --adapter results/encoder --json

Each experiment is read as its counts text; a campaign the checkpoint has a fine-tuned head for (``jss2021_<C>``,
``real:`` section of the fine-tuning config) is predicted by it, otherwise a logistic head on the frozen states is
cross-validated (grouped by experiment). The last line under ``--json`` is one JSON object with
``per_campaign: {DEPL|NET|STO: {macro_f1, accuracy, n, head, macro_f1_ci, accuracy_ci, per_class}}`` scored against
the folder's labels (and ``holdout``: the rows the fine-tuning held out, when the folder has them).

What it prints for a folder: accuracy and macro-F1 against the samples' ``failure_mode`` labels (``NO_FAILURE`` and
``NORMAL_FAULT_FREE_ROUND`` both count as ``HEALTHY``), a 95 % Wilson interval for the accuracy (there are few
samples), and the confusion matrix. Only the service logs are model input; the workload logs (which contain the
label) are never read. Two ways to turn the encoder's output into a failure mode (``--head``):

* ``map`` (default): the simulator fault the encoder diagnoses, through the documented map
  ``ifshm_ray.encoding.real_data.SIM_TO_FAILURE_MODE`` -- nothing of the real data is trained on;
* ``loo``: a linear head on the frozen semantic states, leave-one-out: each sample is scored by a head fitted on
  the other samples only.

``--json`` prints one JSON object with at least ``accuracy``, ``macro_f1`` and ``n``, and ``encoder``: the pool's
``actors`` and the ``contexts`` they encoded.
For one window it prints the diagnosed fault, its calibrated confidence, the unknown score and the top 3.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def diagnose_folder(encoder, samples: list, head: str = "map", mode: str | None = None) -> dict:
    """Accuracy, macro-F1 and the confusion matrix of ``samples`` (``load_samples``); ``encoder``: an
    :class:`~ifshm_ray.encoding.service.EncoderPool` (or an ``EncoderWorker``: the same interface)."""
    from ifshm_ray.encoding.calibration import confusion_matrix, macro_f1, wilson_interval
    from ifshm_ray.encoding.linear import leave_one_out_predictions
    from ifshm_ray.encoding.real_data import REAL_CLASSES, sim_to_failure_mode

    out = encoder.encode([s.telemetry for s in samples], mode=mode)
    y = np.asarray([REAL_CLASSES.index(s.label) for s in samples])
    if head == "map":
        pred = np.asarray([REAL_CLASSES.index(sim_to_failure_mode(f)) for f in out["fault"]])
    else:
        pred = leave_one_out_predictions(out["state"], y)
    k = int((pred == y).sum())
    lo, hi = wilson_interval(k, len(y))
    return {
        "n": len(y), "accuracy": k / len(y), "accuracy_ci95": [lo, hi],
        "macro_f1": macro_f1(y, pred), "head": head, "labels": list(REAL_CLASSES),
        "confusion_matrix": confusion_matrix(y, pred, len(REAL_CLASSES)).tolist(),
        "majority_class_accuracy": float(np.bincount(y).max() / len(y)),
        "predictions": [{"sample_id": s.sample_id, "label": s.label, "predicted": REAL_CLASSES[p],
                         "sim_fault": f, "confidence": float(c), "unknown_score": float(u)}
                        for s, p, f, c, u in zip(samples, pred, out["fault"], out["confidence"],
                                                 out["unknown_score"])],
    }


def diagnose_campaigns(encoder, campaigns: dict, holdout: dict | None = None, mode: str | None = None,
                       n_splits: int = 5, n_boot: int = 1000, seed: int = 0) -> dict:
    """Failure-Dataset-OpenStack (``load_failure_dataset``): ``per_campaign: {DEPL|NET|STO: {macro_f1, accuracy,
    n, head}}`` scored against the folder's labels. ``encoder``: a :class:`~ifshm_ray.encoding.semantic
    .SemanticEncoder`. A campaign with a fine-tuned head (``jss2021_<campaign>``, jobs/finetune_encoder.py with
    real data) is predicted by it (``head: task``; ``holdout``: the same scores on the rows the fine-tuning held out,
    by experiment index, when the folder has them); otherwise a logistic head on the frozen ``both`` states (log1p
    counts + pooled text) in grouped cross-validation (``head: cv_logreg:both``, stratified folds by experiment)."""
    import torch

    from ifshm_ray.encoding import real_encoder, real_eval

    out = {}
    for name, c in campaigns.items():
        names = {i + 1: n for i, n in enumerate(c.label_names)}
        task = real_encoder.task_name("jss2021", name)
        y = c.labels
        if task in encoder.tasks:
            if list(encoder.tasks[task]) != list(c.label_names):
                raise ValueError(f"campaign {name}: the encoder's head has classes {encoder.tasks[task]}, the folder "
                                 f"{list(c.label_names)}")
            ctxs = real_encoder.campaign_contexts(c, encoder.modal.feature_dim)
            encoder.eval()
            pred = []
            with torch.no_grad():
                for i in range(0, len(ctxs), 32):
                    st = encoder(ctxs[i:i + 32], mode=mode)
                    pred += (encoder.task_logits(st, task).argmax(1) + 1).cpu().tolist()
            pred = np.asarray(pred)
            res = real_eval.score(y, pred, c.groups, names, n_boot, seed)
            res["head"] = "task"
            rows = {int(r) for r in (holdout or {}).get(task, [])}
            m = np.isin(c.row_index, list(rows))
            if m.any():
                res["holdout"] = {k: v for k, v in real_eval.score(y[m], pred[m], c.groups[m], names, n_boot,
                                                                  seed).items() if k != "per_class"}
        else:
            X = real_encoder.campaign_features(encoder, c, mode)["both"]
            folds = real_eval.grouped_folds(y, c.groups, n_splits, seed)
            real_eval.check_folds(folds, c.groups)
            pred = real_eval.out_of_fold(lambda: real_encoder.head_model("logreg", seed), X, y, folds)
            res = real_eval.score(y, pred, c.groups, names, n_boot, seed)
            res["head"] = "cv_logreg:both"
        out[name] = res
    return {"per_campaign": out}


def _rate(hits, ids, n_boot: int, seed: int) -> dict:
    """A proportion with its 95 % Wilson interval and a percentile-bootstrap interval over samples."""
    from ifshm_ray.encoding import real_eval
    from ifshm_ray.encoding.calibration import wilson_interval

    hits = np.asarray(hits, dtype=np.int64)
    k, n = int(hits.sum()), len(hits)
    boot = real_eval.bootstrap_ci(hits, np.ones_like(hits), ids, real_eval.accuracy, n_boot, seed) if n else [0.0, 1.0]
    return {"value": round(k / n, 4) if n else 0.0, "k": k, "n": n,
            "wilson_ci95": [round(v, 4) for v in wilson_interval(k, n)], "bootstrap_ci95": [round(v, 4) for v in boot]}


def diagnose_nezha(encoder, samples: list, head: str = "map", mode: str | None = None, n_boot: int = 1000,
                   seed: int = 0) -> dict:
    """Nezha TrainTicket samples (``load_nezha``), as context (a handful of samples: no bar).

    * fault type: the encoder's diagnosis of the whole window (pod metrics, per-service span counts / p90 of the
      minute after injection, the pods' logs) through the documented map
      :data:`~ifshm_ray.encoding.real_data.SIM_TO_NEZHA_FAULT` (``head="map"``; nothing of Nezha is trained on),
      or a leave-one-out linear head on the frozen states (``"loo"``: a class seen once can never be right);
    * root cause: every service's own window (:func:`~ifshm_ray.encoding.real_data.nezha_service_windows`) ranked
      by the encoder's ``1 - P(healthy)`` (its unknown score if it has no healthy class), beside the unsupervised
      metric-shift ranking of :func:`~ifshm_ray.encoding.real_eval.metric_shift_ranking` in the same run.

    Accuracy / macro-F1 / top-k with 95 % bootstrap intervals over samples (``n_boot`` resamples under ``seed``);
    accuracy and top-k also with Wilson intervals."""
    from ifshm_ray.encoding import real_eval
    from ifshm_ray.encoding.linear import leave_one_out_predictions
    from ifshm_ray.encoding.real_data import NEZHA_FAULT_TYPES, NEZHA_NONE, nezha_service_windows, sim_to_nezha_fault

    ids = np.asarray([s.sample_id for s in samples])
    whole = encoder.encode([s.telemetry for s in samples], mode=mode)
    labels = list(NEZHA_FAULT_TYPES) + [NEZHA_NONE]
    y = np.asarray([labels.index(s.fault_type) for s in samples])
    if head == "map":
        pred = np.asarray([labels.index(sim_to_nezha_fault(f)) for f in whole["fault"]])
    else:
        pred = leave_one_out_predictions(whole["state"], y) if len(set(y.tolist())) > 1 else np.full_like(y, -1)
    fault_types = list(encoder.info()["fault_types"])
    windows = [nezha_service_windows(s) for s in samples]
    flat = [(i, svc, w) for i, ws in enumerate(windows) for svc, w in ws.items()]
    per_svc = encoder.encode([w for _, _, w in flat], mode=mode)
    if "healthy" in fault_types:
        anomaly, score_name = 1.0 - per_svc["probs"][:, fault_types.index("healthy")], "1 - P(healthy)"
    else:
        anomaly, score_name = np.asarray(per_svc["unknown_score"], np.float64), "unknown_score"
    enc_rank: list[list[str]] = [[] for _ in samples]
    scored: list[list[tuple[str, float]]] = [[] for _ in samples]
    for (i, svc, _), a in zip(flat, anomaly):
        scored[i].append((svc, float(a)))
    for i, lst in enumerate(scored):
        enc_rank[i] = [svc for svc, _ in sorted(lst, key=lambda t: (-t[1], t[0]))]
    shift_rank = [[svc for svc, _ in real_eval.metric_shift_ranking(s)] for s in samples]
    truth = [s.root_cause_service for s in samples]

    def ranking(ranks):
        return {f"top{k}": _rate([t in r[:k] for t, r in zip(truth, ranks)], ids, n_boot, seed) for k in (1, 3)}

    hits = (pred == y).astype(np.int64)
    return {
        "dataset": "nezha_trainticket_fse2023", "n": len(samples), "head": head,
        "context": "a few samples: reported with intervals, no bar (Nezha's paper: 89.8% top-1 root cause on its "
                   "full TrainTicket data)",
        "fault_type": {"accuracy": _rate(hits, ids, n_boot, seed),
                       "macro_f1": round(real_eval.macro_f1(y, pred), 4),
                       "macro_f1_ci95": [round(v, 4) for v in real_eval.bootstrap_ci(
                           y, pred, ids, real_eval.macro_f1, n_boot, seed)] if len(y) else [0.0, 1.0],
                       "map": "ifshm_ray.encoding.real_data.SIM_TO_NEZHA_FAULT" if head == "map" else None},
        "root_cause": {"encoder": {"score": score_name, **ranking(enc_rank)}, "metric_shift": ranking(shift_rank)},
        "services_per_sample": [len(w) for w in windows],
        "predictions": [{"sample_id": s.sample_id, "fault_type": s.fault_type,
                         "predicted_fault_type": labels[p] if p >= 0 else None, "sim_fault": f,
                         "confidence": float(c), "root_cause_service": s.root_cause_service,
                         "encoder_top3": er[:3], "metric_shift_top3": sr[:3]}
                        for s, p, f, c, er, sr in zip(samples, pred, whole["fault"], whole["confidence"], enc_rank,
                                                      shift_rank)],
    }


def print_nezha(res: dict) -> None:
    ft, rc = res["fault_type"], res["root_cause"]
    acc = ft["accuracy"]
    print(f"Nezha samples: {res['n']}   head: {res['head']}   ({res['context']})")
    print(f"fault type: accuracy {acc['value']:.3f} ({acc['k']}/{acc['n']}; Wilson {acc['wilson_ci95']}, "
          f"bootstrap {acc['bootstrap_ci95']})  macro-F1 {ft['macro_f1']:.3f} {ft['macro_f1_ci95']}")
    for name, r in (("encoder (" + rc["encoder"]["score"] + ")", rc["encoder"]), ("metric shift", rc["metric_shift"])):
        print(f"root cause, {name}: top-1 {r['top1']['value']:.3f} {r['top1']['bootstrap_ci95']}  "
              f"top-3 {r['top3']['value']:.3f} {r['top3']['bootstrap_ci95']}")
    for p in res["predictions"]:
        print(f"  {p['sample_id']}: {p['fault_type']} -> {p['predicted_fault_type']} (sim {p['sim_fault']}); "
              f"root cause {p['root_cause_service']}: encoder {p['encoder_top3']}, shift {p['metric_shift_top3']}")


def diagnose_window(encoder, telemetry: dict, mode: str | None = None) -> dict:
    """The diagnosis of one (validated) window; ``encoder`` as in :func:`diagnose_folder`."""
    from ifshm_ray.encoding.real_data import sim_to_failure_mode

    out = encoder.encode([telemetry], mode=mode)
    probs = out["probs"][0]
    top = np.argsort(-probs)[:3]
    fault = out["fault"][0]
    fault_types = encoder.info()["fault_types"]
    return {"fault": fault, "confidence": float(out["confidence"][0]), "unknown_score": float(out["unknown_score"][0]),
            "openstack_failure_mode": sim_to_failure_mode(fault),
            "top3": [{"fault": fault_types[i], "p": float(probs[i])} for i in top]}


def read_window(path: str) -> dict:
    """A telemetry window from a JSON file, checked against the ifshm.telemetry/v1 schema."""
    from ifshm_ray.telemetry import validate_telemetry

    try:
        return validate_telemetry(json.loads(Path(path).read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--telemetry {path}: not JSON ({exc})") from None
    except ValueError as exc:  # TelemetryError
        raise ValueError(f"--telemetry {path}: {exc}") from None


def print_report(res: dict) -> None:
    lo, hi = res["accuracy_ci95"]
    print(f"samples: {res['n']}   head: {res['head']}")
    print(f"accuracy: {res['accuracy']:.3f}  (95% CI {lo:.3f}-{hi:.3f}; majority class {res['majority_class_accuracy']:.3f})")
    print(f"macro-F1: {res['macro_f1']:.3f}")
    labels = res["labels"]
    short = [lb.replace("FAILURE_", "F_")[:14] for lb in labels]
    print("confusion matrix (rows: label, columns: predicted)")
    print(" " * 16 + " ".join(f"{s:>14}" for s in short))
    for s, row in zip(short, res["confusion_matrix"]):
        print(f"{s:>15} " + " ".join(f"{v:>14d}" for v in row))


def diagnose_jss(args, checkpoint: str) -> dict:
    """A Failure-Dataset-OpenStack folder: the encoder in this process (its task heads are not served by the actor
    pool); JSON with ``per_campaign`` as the last line under ``--json``."""
    from ifshm_ray.encoding.real_data import load_failure_dataset
    from ifshm_ray.encoding.semantic import SemanticEncoder

    import torch

    torch.set_num_threads(max(1, int(args.num_cpus)))
    campaigns = load_failure_dataset(args.data)  # RealDataError on a malformed folder (caught by the caller)
    encoder = SemanticEncoder.load(checkpoint)
    tasks_file = Path(checkpoint) / "real_tasks.json"
    holdout = json.loads(tasks_file.read_text())["holdout_rows"] if tasks_file.is_file() else None
    res = diagnose_campaigns(encoder, campaigns, holdout, args.mode, n_boot=args.n_boot)
    res.update({"data": str(args.data), "encoder_checkpoint": checkpoint})
    if args.json:
        print(json.dumps(res))
    else:
        for name, r in res["per_campaign"].items():
            lo, hi = r["macro_f1_ci"]
            ho = r.get("holdout")
            print(f"{name}: macro-F1 {r['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]  accuracy {r['accuracy']:.3f}  "
                  f"n {r['n']}  head {r['head']}" + (f"  (held-out rows: macro-F1 {ho['macro_f1']:.3f}, "
                                                     f"n {ho['n']})" if ho else ""))
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a real set's folder: openstack_fault_injection_fse2019, "
                                    "openstack_failure_dataset_jss2021 (or one campaign) or nezha_trainticket_fse2023")
    src.add_argument("--telemetry", help="one telemetry window as a JSON file")
    ap.add_argument("--encoder-checkpoint", default=str(REPO / "results" / "encoder"),
                    help="checkpoint folder written by jobs/finetune_encoder.py --out (default: results/encoder)")
    ap.add_argument("--adapter", dest="encoder_checkpoint", default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS)  # the old name of --encoder-checkpoint
    ap.add_argument("--head", choices=("map", "loo"), default="map")
    ap.add_argument("--mode", choices=("templates", "context"), help="LM path (default: the checkpoint's)")
    ap.add_argument("--max-lines", type=int, default=4000, help="service-log lines per sample")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--n-boot", type=int, default=1000,
                    help="bootstrap resamples (Failure-Dataset-OpenStack, Nezha)")
    ray_args = ap.add_argument_group("encoder actor pool")
    ray_args.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    ray_args.add_argument("--num-actors", type=int, default=1, help="encoder replicas")
    ray_args.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per encoder actor")
    ray_args.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (split over its ranks)")
    ray_args.add_argument("--tensor-parallel", type=int, default=1, help="ranks per replica (one node)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)

    # ---- inputs, checked before Ray starts ---------------------------------------------------------------
    from ifshm_ray.encoding.config import ServiceConfig
    from ifshm_ray.encoding.real_data import detect_layout, load_nezha, load_samples
    from ifshm_ray.encoding.semantic import checkpoint_dir
    from ifshm_ray.encoding.service import EncoderPool, as_config

    try:
        checkpoint = str(checkpoint_dir(args.encoder_checkpoint).resolve())
        layout = detect_layout(args.data) if args.data else None
        if layout == "jss2021":
            return diagnose_jss(args, checkpoint)
        if layout == "nezha":
            samples = load_nezha(Path(args.data), max_lines=args.max_lines)
        else:
            samples = load_samples(Path(args.data), max_lines=args.max_lines) if args.data else None
        window = read_window(args.telemetry) if args.telemetry else None
        service = as_config(ServiceConfig, dict(num_actors=args.num_actors, num_cpus=args.num_cpus,
                                                num_gpus=args.num_gpus, tensor_parallel=args.tensor_parallel))
    except (OSError, ValueError, KeyError) as exc:  # AdapterNotFoundError, RealDataError, TelemetryError, ...
        ap.exit(2, f"diagnose.py: error: {exc}\n")
    if samples is not None and not samples:
        ap.exit(2, f"diagnose.py: error: no samples in {args.data}/samples.json\n")

    # ---- the encoder actor pool ----------------------------------------------------------------------------
    import ray

    owns_ray = not ray.is_initialized()
    if owns_ray and args.address:
        ray.init(address=args.address, logging_level=logging.WARNING)
    elif owns_ray:
        cpus = max(1, math.ceil(service.num_actors * service.tensor_parallel * service.num_cpus))
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        with EncoderPool(service_config=service, checkpoint=checkpoint) as pool:
            if layout == "nezha":
                res = diagnose_nezha(pool, samples, args.head, args.mode, n_boot=args.n_boot)
            elif samples is not None:
                res = diagnose_folder(pool, samples, args.head, args.mode)
            else:
                res = diagnose_window(pool, window, args.mode)
            res["encoder"] = {"actors": len(pool.replicas), "tensor_parallel": service.tensor_parallel,
                              "contexts": pool.stats()["contexts"]}
    finally:
        if owns_ray:
            ray.shutdown()

    # ---- report ----------------------------------------------------------------------------------------------
    if args.json:
        print(json.dumps(res))
    elif layout == "nezha":
        print_nezha(res)
    elif samples is not None:
        print_report(res)
    else:
        print(f"fault: {res['fault']}  confidence {res['confidence']:.3f}  unknown score "
              f"{res['unknown_score']:.2f}  (OpenStack failure mode: {res['openstack_failure_mode']})")
        for t in res["top3"]:
            print(f"  {t['p']:.3f}  {t['fault']}")
    return res


if __name__ == "__main__":
    main()
