"""The `simscale` command.

    simscale data build-mini --out DIR [--seed N]     build the embedded mini dataset (nuPlan + NAVSIM format)
    simscale data info PATH                           summarize logs, scenarios, agents and map layers
    simscale bench NAME                               run a benchmark (ends with one JSON line of figures)
    simscale check-epdms FILE.json                    score NAVSIM golden cases with the engine, list mismatches
    simscale check-golden DIR [--source S]            compare against a golden devkit/NAVSIM folder (oracle_mini format)
    simscale vocab build --split S --k K --out V.npy  k-means trajectory vocabulary from the human plans of a split
    simscale vocab label --split S --vocab V.npy --out DIR   EPDMS sub-score labels (float16) of V in every scene
    simscale render --log LOG --token TOKEN --out DIR   camera images, a bird's-eye view and a mosaic (PNG)
    simscale evaluate --policy SPEC --split S --mode M --out RUN_DIR   benchmark a policy: results, report, videos
    simscale evaluate [--agents A ...] [--split S] [--source S]   closed-loop EPDMS of agents on every scenario
    simscale compare RUN_DIR... [--out DIR]           runs side by side: a table (Markdown + CSV) and a plot
    simscale generate --split S --rounds R --out DIR  SimScale's data generation rounds as Parquet shards (resumable)
    simscale train --planner P --real S [--sim DIR ...] --out RUN_DIR   train a learned planner (resumable)
    simscale train-bc --split S --rounds R --out DIR  online imitation (DAgger) of the pseudo-experts in the env
    simscale train-rl --algo ppo --split S --timesteps N --out DIR   stable-baselines3 PPO on the env
    simscale experiment simscale --planners P --rounds 0,1 --seeds N --out DIR   SimScale's experiment (resumable)
    simscale demo                                     the main job of `make demo`
    simscale export --format openscene RUN_DIR --out DIR [--split NAME]   a generation run in NAVSIM's OpenScene layout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import DataError, MissingFileError, SimScaleError


class _LogToStderr:
    """Shows a library logger's INFO messages (progress) on stderr while a command runs."""

    def __init__(self, name: str, prefix: str = "", enabled: bool = True):
        import logging

        self.logger = logging.getLogger(name)
        self.handler = logging.StreamHandler(sys.stderr) if enabled else None
        if self.handler is not None:
            self.handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
        self.level = self.logger.level

    def __enter__(self):
        import logging

        if self.handler is not None:
            self.logger.addHandler(self.handler)
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.logger.setLevel(self.level)
        return False


def _cmd_build_mini(args) -> int:
    from .data.mini.build import build_mini, is_complete

    from .data.mini.build import PRESETS

    spec = PRESETS[args.preset]
    logs = spec.num_logs if args.logs is None else args.logs
    if logs > spec.num_logs:
        raise SimScaleError(f"--logs: the {spec.name} preset has {spec.num_logs} logs, got {logs}")
    if args.if_missing and is_complete(args.out, args.seed, logs, spec.name):
        print(f"mini dataset already built in {args.out}", file=sys.stderr)
        return 0
    with _LogToStderr("simscale_env.data.mini", enabled=not args.quiet):
        build_mini(args.out, args.seed, workers=args.workers, progress=not args.quiet, logs=logs, preset=spec.name)
    return 0


def _cmd_info(args) -> int:
    from .data.info import format_summary, summarize

    s = summarize(args.path)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


def _cmd_bench(args) -> int:
    from benchmarks import run_benchmark

    return run_benchmark(args.name, args.rest)


def _cmd_check_epdms(args) -> int:
    from .metrics.golden import check_cases

    r = check_cases(args.file)
    n = r["proposals"]
    print(f"{r['cases']} cases, {n} proposals: {args.file}")
    print(f"{'metric':<34} {'agree':>7} {'mismatch':>9}")
    for metric, k in r["agree"].items():
        print(f"{metric:<34} {k:>7} {n - k:>9}")
    for m in r["mismatches"][:50]:
        print(f"MISMATCH {m['scene']}[{m['proposal']}] {m['name']}: {m['metric']} engine={m['engine']!r} "
              f"navsim={m['navsim']!r}")
    print(json.dumps({"cases": r["cases"], "proposals": n, "mismatches": len(r["mismatches"])}))
    return 1 if r["mismatches"] else 0


def _split_logs(args):
    from .data.paths import DataConfig

    cfg = DataConfig.resolve(args.data, args.maps) if args.data else DataConfig.resolve()
    spec, logs = cfg.split_logs(args.split, "`simscale vocab`")
    return cfg, spec, logs


def _cmd_check_golden(args) -> int:
    from .golden.check import CHECKS, check_golden, total_mismatches
    from .golden.report import format_results

    with _LogToStderr("simscale_env.golden", "check-golden: ", enabled=not args.quiet):  # progress on stderr
        summary, results = check_golden(args.dir, args.cache, source=args.source)
    for line in format_results([c[2] for c in CHECKS], results, max_mismatches=max(0, args.max_mismatches)):
        print(line)
    print(json.dumps(summary))
    return 1 if total_mismatches(summary) else 0


def _cmd_vocab_build(args) -> int:
    from .metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary

    _, spec, logs = _split_logs(args)
    plans = human_plans(logs, num_poses=args.poses, interval_s=args.interval, stride_s=args.stride,
                        progress=not args.quiet)
    if len(plans) < args.k:
        raise SimScaleError(f"vocab build: --k {args.k} clusters need at least {args.k} human plans; split "
                            f"{spec.name} gives {len(plans)} at --stride {args.stride} s (lower --k or --stride, or "
                            f"add logs)")
    vocab = kmeans_vocabulary(plans, args.k, iterations=args.iterations, seed=args.seed, progress=not args.quiet)
    save_vocabulary(args.out, vocab)
    print(json.dumps({"split": spec.name, "logs": len(logs), "human_plans": len(plans),
                      "vocabulary": list(vocab.shape), "out": str(args.out)}))
    return 0


def _cmd_vocab_label(args) -> int:
    from .data import ScenarioBuilder
    from .metrics.vocabulary import label_scenes, load_vocabulary

    cfg, spec, logs = _split_logs(args)
    vocab = load_vocabulary(args.vocab)
    builder = ScenarioBuilder(logs)
    tokens = spec.tokens if spec.tokens is not None else [r.token for r in builder.refs()]
    if args.limit is not None:
        tokens = tokens[:args.limit]
    r = label_scenes(builder, tokens, cfg.nuplan_maps_root, vocab, args.out, interval_s=args.interval,
                     agent_mode=args.agents, reference=args.ep_reference, scene_window=args.scene_window,
                     progress=not args.quiet)
    print(json.dumps(r))
    return 0


def _cmd_render(args) -> int:
    from .data.nuplan_db import LogDB
    from .data.scenario import extract_scenario
    from .map import load_map
    from .render.renderer import load_reconstruction
    from .sim import SimConfig, Simulation

    with LogDB(args.log) as db:
        sc = extract_scenario(db, args.token)
    channels = tuple(c for c in args.channels.split(",") if c)
    have = sorted(cam.channel for cam in sc.cameras)
    missing = [c for c in channels if c not in have]
    if missing or not channels:
        raise DataError(args.log, f"--channels {args.channels!r}: {missing or 'no channel'} not in the log's camera "
                                  f"table (has {', '.join(have)})")
    maps = args.maps
    if maps is None:
        cand = Path(args.log).resolve().parents[3] / "maps" if len(Path(args.log).resolve().parents) > 3 else None
        maps = cand if cand is not None and cand.is_dir() else None
    m = load_map(sc.map_location, maps)
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    if not 0 <= args.iteration < sim.num_iterations:
        raise SimScaleError(f"render: --iteration must be in [0, {sim.num_iterations}) for scenario {args.token}, "
                            f"got {args.iteration}")
    w = sim.reset()
    if args.iteration:
        w = type(w)(args.iteration, int(sc.iteration_timestamps_us[args.iteration]),
                    sim.logged_ego_state(args.iteration), None, None)
    recon = load_reconstruction(args.reconstructions, [sc.log_name, sc.map_location]) if args.reconstructions else None
    out, backend = _write_frame(sim, w, args.out, channels, args.width, args.height,
                                seed=args.seed, backend=args.backend, reconstruction=recon)
    print(json.dumps({"token": args.token, "iteration": args.iteration, "cameras": list(out.channels),
                      "gaussians": out.num_gaussians, "backend": backend, "out": str(args.out)}))
    return 0


ALL_CHANNELS = "CAM_L0,CAM_F0,CAM_R0,CAM_L1,CAM_B0,CAM_R1,CAM_L2,CAM_R2"


def _write_frame(sim, world, out_dir: Path, channels, width, height, *, seed=0, backend="auto", reconstruction=None):
    """The camera images of one world state (one PNG per channel), its bird's-eye view and a mosaic of both."""
    from PIL import Image

    from .render.bev import BEVRenderer, mosaic
    from .render.renderer import CameraRenderer
    from .sim.world import ego_box

    sc, m = sim.scenario, sim.map
    r = CameraRenderer(m, sc.cameras, channels, width, height, seed=seed, backend=backend,
                       reconstruction=reconstruction)
    objs = sim.objects(world)
    out = r.render(world.ego, objs)
    route = m.route_lane_ids([x for x in sc.route_roadblock_ids if x in m.roadblocks])
    bev = BEVRenderer(m, route).rgb(world.ego, objs, ego_box=ego_box(world.ego))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for ch, img in zip(out.channels, out.rgb):
        Image.fromarray(img).save(out_dir / f"{ch}.png")
    Image.fromarray(bev).save(out_dir / "bev.png")
    Image.fromarray(mosaic(out.rgb, bev)).save(out_dir / "mosaic.png")
    return out, r.backend


def _evaluation_config(args, policy: str, policy_kwargs: dict):
    from evaluation.modes import EvalConfig

    kw = {"data_source": args.source}
    if args.openscene:
        if not args.openscene.is_dir():
            raise MissingFileError(args.openscene, "OpenScene data folder not found")
        kw["openscene_root"] = str(args.openscene)
    if args.maps:
        kw["maps_root"] = str(args.maps)
    try:
        return EvalConfig(policy=policy, policy_kwargs=policy_kwargs, split=args.split, mode=args.mode,
                          seed=args.seed, traffic=args.traffic, stage2_starts=args.stage2_starts, env_kwargs=kw,
                          ec_partner=args.ec_partner)
    except ValueError as exc:
        if isinstance(exc, SimScaleError):
            raise
        raise SimScaleError(f"evaluate: {exc}") from None


def _cmd_evaluate(args) -> int:
    """`simscale evaluate`: with --policy one run (evaluation.run_evaluation) into --out; the older --agents form runs
    closed_loop for each agent and prints evaluation.format_table's table. Exit status 1 when items failed."""
    import os
    import shlex

    from evaluation import format_table, run_evaluation

    if args.policy and args.agents:
        raise SimScaleError("evaluate: give --policy SPEC or --agents A ..., not both")
    if args.policy and args.out is None:
        raise SimScaleError("evaluate: --policy needs --out RUN_DIR (where the results and the report go)")
    if args.agents and args.mode != "closed_loop":
        raise SimScaleError(f"evaluate: --agents runs closed_loop; use --policy SPEC with --mode {args.mode}")
    if args.policy_kwargs and not args.policy:
        raise SimScaleError("evaluate: --policy-kwargs needs --policy")
    if args.data:
        if not args.data.is_dir():
            raise MissingFileError(args.data, "mini dataset folder not found (build one with `simscale data build-mini "
                                              "--out DIR`)")
        os.environ["SIMSCALE_MINI"] = str(args.data)
    command = shlex.join(["simscale", *args.argv])
    common = dict(tokens=args.tokens, workers=args.workers, ray=args.ray or bool(args.ray_address),
                  ray_address=args.ray_address, progress=not args.quiet, videos=not args.no_videos, command=command)
    with _LogToStderr("evaluation", "evaluate: ", enabled=not args.quiet):
        if args.policy:
            res = run_evaluation(_evaluation_config(args, args.policy, args.policy_kwargs or {}), out=args.out,
                                 **common)
            results = [res]
        else:
            results = []
            for name in args.agents or ["pdm_closed", "constant_velocity", "stand_still"]:
                out = args.out / name if args.out is not None else None
                results.append(run_evaluation(_evaluation_config(args, name, {}), out=out, **common))
    if args.policy:
        s = res.summary
        for line in _run_lines(s):
            print(line)
        print(json.dumps({"policy": s["policy"], "split": s["split"], "mode": s["mode"], "seed": s["seed"],
                          "epdms": _round(s["epdms"]["mean"]), "ci95": [_round(v) for v in s["epdms"]["ci95"]],
                          **({k: _round(v) for k, v in s["navsim"].items()
                              if k in ("stage_one", "stage_two", "collision_rate", "offroad_rate")}
                             if isinstance(s.get("navsim"), dict) else {}),
                          "rows": s["rows"], "failed": res.failed, "run_time_s": s["run_time_s"],
                          "run_dir": str(res.run_dir)}))
    else:
        table = []
        for r in results:
            ok = [row for row in r.rows if row.get("valid")]
            m = r.summary["metrics"]
            table.append({"agent": r.cfg.policy, "episodes": [{**row, "return_": row["return"]} for row in ok],
                          "epdms": m["epdms"]["mean"], "collision_rate": m["collision_rate"]["mean"],
                          "offroad_rate": m["offroad_rate"]["mean"], "return": m["return"]["mean"]})
        print(format_table(table))
        print(json.dumps({t["agent"]: {"epdms": _round(t["epdms"]), "collision_rate": _round(t["collision_rate"]),
                                       "offroad_rate": _round(t["offroad_rate"]),
                                       "failed": r.failed} for t, r in zip(table, results)}))
    failed = sum(r.failed for r in results)
    if failed:
        where = f" (errors in {results[0].run_dir / 'aggregate.json'})" if results[0].run_dir is not None else ""
        total = sum(len(r.rows) for r in results)
        print(f"simscale: {failed} of {total} items failed{where}", file=sys.stderr)
        return 1
    return 0


def _cmd_train(args) -> int:
    """`simscale train`: a learned planner on real and/or sim samples (training.train.train) into --out; prints one
    JSON line (epochs, final loss, samples/s, the final evaluation's EPDMS)."""
    import os
    import shlex

    from training.train import TrainConfig, train

    if args.data:
        if not args.data.is_dir():
            raise MissingFileError(args.data, "mini dataset folder not found (build one with `simscale data build-mini "
                                              "--out DIR`)")
        os.environ["SIMSCALE_MINI"] = str(args.data)
    over = {}
    for item in args.planner_config or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SimScaleError(f"train: --set needs KEY=VALUE, got {item!r}")
        try:
            over[key] = json.loads(value)
        except json.JSONDecodeError:
            over[key] = value
    real = None if args.real in ("none", "") else args.real
    cfg = TrainConfig(planner=args.planner, planner_config=over, real=real, sim=tuple(str(p) for p in args.sim or ()),
                      rewards_only=args.rewards_only, sim_ratio=args.sim_ratio,
                      vocab=str(args.vocab) if args.vocab else None,
                      vocab_labels=str(args.vocab_labels) if args.vocab_labels else None, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, workers=args.workers,
                      threads=args.threads,
                      eval_split=None if args.eval_split in ("none", "") else args.eval_split,
                      eval_mode=args.eval_mode, eval_workers=args.eval_workers)
    with _LogToStderr("training", "train: ", enabled=not args.quiet):
        r = train(cfg, args.out, resume=args.resume, progress=not args.quiet,
                  command=shlex.join(["simscale", *args.argv]), max_steps_per_epoch=args.max_steps)
    ev = r.evaluation or {}
    epdms = (ev.get("epdms") or {}).get("mean")
    print(json.dumps({"planner": cfg.planner, "epochs": r.epochs, "steps": r.steps,
                      "loss": [round(x, 5) for x in r.epoch_losses], "samples": r.samples,
                      "samples_per_s": round(r.samples_per_s, 2), "seconds": round(r.seconds, 1),
                      "eval_epdms": epdms, "checkpoint": str(args.out / "checkpoint.pt")}))
    return 0


def _cmd_train_rl(args) -> int:
    """`simscale train-rl`: stable-baselines3 PPO on the env (training.rl.train_rl) into --out; prints its summary as
    one JSON line."""
    from training import rl

    with _LogToStderr("training", "train-rl: ", enabled=True):
        summary = rl.run_from_args(args)
    print(json.dumps(summary))
    return 0


def _cmd_train_bc(args) -> int:
    """`simscale train-bc`: DAgger-style online imitation of a pseudo-expert (training.bc.train_bc) into --out; prints
    its summary as one JSON line."""
    from training import bc

    with _LogToStderr("training", "train-bc: ", enabled=not args.quiet):
        summary = bc.run_from_args(args)
    print(json.dumps(summary))
    return 0


def _cmd_experiment(args) -> int:
    """`simscale experiment simscale`: SimScale's experiment (evaluation.experiment.run_experiment) into --out; prints
    its summary as one JSON line; exit status 1 when a cell failed."""
    from evaluation import experiment

    with _LogToStderr("evaluation.experiment", "experiment: ", enabled=not args.quiet), \
            _LogToStderr("training.engine", "experiment: ", enabled=not args.quiet):
        summary = experiment.run_from_args(args)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def _cmd_generate(args) -> int:
    """`simscale generate`: SimScale's generation rounds (training.engine.run_generation) into --out; prints the
    valid ratio per round and one JSON line. Exit status 1 when tasks failed."""
    import os
    import shlex

    from training.engine import run_generation
    from training.generate import GenConfig

    if args.data:
        if not args.data.is_dir():
            raise MissingFileError(args.data, "mini dataset folder not found (build one with `simscale data build-mini "
                                              "--out DIR`)")
        os.environ["SIMSCALE_MINI"] = str(args.data)
    cams = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    if not cams:
        raise SimScaleError("generate: --cameras needs 'all' or a comma-separated list of channels")
    cfg = GenConfig(split=args.split, rounds=args.rounds, expert=args.expert, seed=args.seed, cameras=cams,
                    width=args.width, height=args.height, epdms_threshold=args.threshold,
                    vocab=str(args.vocab) if args.vocab else None)
    with _LogToStderr("training", "generate: ", enabled=not args.quiet):
        m = run_generation(cfg, args.out, workers=args.workers, ray=args.ray or bool(args.ray_address),
                           ray_address=args.ray_address, resume=args.resume, shard_mb=args.shard_mb,
                           progress=not args.quiet, command=shlex.join(["simscale", *args.argv]))
    for r in m["rounds"]:
        why = ", ".join(f"{k} {v}" for k, v in r["rejected"].items() if v)
        fails = f"; failed {len(r['failed'])}" if r["failed"] else ""
        print(f"round {r['round']}: {r['valid']} of {r['tried']} valid ({100 * r['valid_ratio']:.1f} %)"
              f"{'; rejected: ' + why if why else ''}{fails}")
    failed = len(m["failures"])
    print(json.dumps({"split": m["split"], "seed": m["seed"], "expert": m["expert"], "rounds": len(m["rounds"]),
                      "valid_ratio": [round(r["valid_ratio"], 4) for r in m["rounds"]], "samples": m["samples"],
                      "shards": len(m["shards"]), "failed": failed, "out": str(args.out)}))
    if failed:
        print(f"simscale: {failed} tasks failed (errors in {args.out / 'manifest.json'})", file=sys.stderr)
        return 1
    return 0


def _round(v, nd: int = 4):
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _run_lines(s: dict) -> list[str]:
    """The headline of a run summary (evaluation.report.summarize) as a small Markdown table."""
    from evaluation.report import SHORT, _ci

    m = s["metrics"]
    lines = [f"{s['policy']} on {s['split']} ({s['mode']}, seed {s['seed']}): {s['rows']} items, "
             f"{s['failed_rows']} failed, {s['run_time_s']} s", "", "| metric | mean [95 % interval] |", "|---|---|",
             f"| EPDMS | {_ci(m['epdms'])} |"]
    extra = {"two_stage": ("stage_one", "stage_two"), "closed_loop": ("collision_rate", "offroad_rate")}
    names = {"stage_one": "stage one", "stage_two": "stage two", "collision_rate": "at-fault collisions",
             "offroad_rate": "off-road"}
    lines += [f"| {names[k]} | {_ci(m[k], k.endswith('rate'))} |" for k in extra.get(s["mode"], ())]
    lines += [f"| {SHORT[c]} | {_ci(m[c])} |" for c in SHORT if c != "score"]
    return lines


def _cmd_compare(args) -> int:
    from evaluation.compare import compare_runs

    r = compare_runs(args.run_dirs, out=args.out)
    print(r["markdown"], end="")
    print(json.dumps({"runs": len(r["rows"]), "out": str(args.out), "files": r["files"]}))
    return 0


def _cmd_export(args) -> int:
    from training.export import export_openscene

    with _LogToStderr("training.export"):
        out = export_openscene(args.run_dir, args.out, split=args.split)
    print(json.loads((out / "export.json").read_text())["samples"], "samples exported to", out)
    return 0


def _split_name(text: str) -> str:
    if not text or "/" in text or text.startswith(".") or text.strip() != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain folder name")
    return text


def _cmd_demo(args) -> int:
    """`make demo`: one perturbed SimScale-navhard-v0 episode driven by the PDM-Closed pseudo-expert, its EPDMS
    table, and a video of the cameras and the bird's-eye view."""
    import os

    from .data.paths import ensure_mini

    root = ensure_mini(args.data)
    os.environ["SIMSCALE_MINI"] = str(root)
    import gymnasium as gym

    from .envs import save_video

    env = gym.make("SimScale-navhard-v0", render_mode="rgb_array", data_source=args.source)
    obs, info = env.reset(seed=args.seed)
    p = info["perturbation"]
    print(f"scenario {info['scenario_token']} ({env.unwrapped.sim.scenario.scenario_type}, log {info['log_name']})")
    if info["perturbed"]:
        print(f"perturbed start: lateral {p['lateral']:+.2f} m, longitudinal {p['longitudinal']:+.2f} m, heading "
              f"{np.degrees(p['heading']):+.1f} deg, speed x{p['speed_scale']:.2f}")
    u = env.unwrapped
    chans = tuple(c for c in ALL_CHANNELS.split(",") if c in {cam.channel for cam in u.sim.scenario.cameras})
    _write_frame(u.sim, u.world, Path(args.out) / "start", chans, 480, 224)
    print(f"cameras at the start: {Path(args.out) / 'start'} ({len(chans)} PNGs, bev.png, mosaic.png)")
    frames = [env.render()]
    ret = 0.0
    while True:
        obs, r, term, trunc, info = env.step(info["pseudo_expert"]["pdm_closed"])
        ret += r
        frames.append(env.render())
        if term or trunc:
            break
    ep = info["epdms_episode"]
    names = [("no_at_fault_collisions", "NC"), ("drivable_area_compliance", "DAC"),
             ("driving_direction_compliance", "DDC"), ("traffic_light_compliance", "TLC"),
             ("ego_progress", "EP"), ("time_to_collision_within_bound", "TTC"), ("lane_keeping", "LK"),
             ("history_comfort", "HC")]
    print(f"{'metric':<6} {'score':>6}")
    for key, short in names:
        print(f"{short:<6} {ep[key]:>6.3f}")
    print(f"{'EPDMS':<6} {ep['epdms']:>6.3f}   (return {ret:.3f}, {len(frames) - 1} decision steps)")
    path = save_video(frames, Path(args.out) / "episode.mp4", fps=2)
    print(f"video: {path}")
    print(json.dumps({"token": info["scenario_token"], "epdms": round(ep["epdms"], 4), "return": round(ret, 4),
                      "video": str(path)}))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `PROG: error: MESSAGE (see PROG --help)` on stderr, exit status 2 (the usage
    block argparse prints before the error would make a user error several lines)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"k\": 1}}', got {text!r}")
    return v


def _token(text: str) -> str:
    try:
        ok = len(text) == 16 and len(bytes.fromhex(text)) == 8
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a 16-character hex token, got {text!r}")
    return text


def _listing(title: str, items: dict) -> str:
    """A 'title:' block of `name  description` lines, wrapped, for a RawDescriptionHelpFormatter description."""
    import textwrap

    width = max(map(len, items)) + 2
    lines = [f"{title}:"]
    for name, text in items.items():
        wrapped = textwrap.wrap(text, 110 - width - 2) or [""]
        lines.append(f"  {name:<{width}}{wrapped[0]}")
        lines += [" " * (width + 2) + w for w in wrapped[1:]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="simscale", description="SimScale-Gym: driving simulation over nuPlan/NAVSIM. A user error "
                                               "(missing or corrupt file, unknown name, bad value) is one line on "
                                               "stderr and exit status 2.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    seed = _int_at_least(0)

    data = sub.add_parser("data", help="datasets: build the mini dataset, summarize data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND", help="one of:")
    b = dsub.add_parser("build-mini", help="generate the embedded mini dataset in real nuPlan/NAVSIM format")
    b.add_argument("--out", required=True, type=Path,
                   help="output folder (created; an existing one must be empty or an earlier mini build)")
    b.add_argument("--seed", type=seed, default=0, help="generator seed (default 0)")
    b.add_argument("--workers", type=_int_at_least(1), default=None, help="processes (default: one per core)")
    b.add_argument("--if-missing", action="store_true", help="do nothing if a complete build is already there")
    from .data.mini.build import NUM_LOGS, PRESETS, TEST_LOGS

    large = PRESETS["large"]
    b.add_argument("--preset", choices=tuple(PRESETS), default="mini",
                   help=f"mini: the embedded dataset ({NUM_LOGS} logs, {TEST_LOGS} of them test logs); large: "
                        f"{large.num_logs} logs, {large.test_logs} test logs (about {large.size_mb} MB, "
                        f"{large.build_minutes} minutes on two cores; `simscale experiment simscale` uses it) "
                        f"(default mini)")
    b.add_argument("--logs", type=_int_at_least(1), default=None, metavar="N",
                   help=f"build only the first N logs of the preset (the same files as in its full build), e.g. a "
                        f"small dataset for tests; the splits hold what was built (the test splits need N > "
                        f"{NUM_LOGS - TEST_LOGS} for mini); a build of another N in --out is replaced (default: all)")
    b.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    b.set_defaults(func=_cmd_build_mini)
    i = dsub.add_parser("info", help="summarize a .db log, a folder of logs or a dataset root")
    i.add_argument("path", type=Path, help="a nuPlan .db log, a folder of logs or a dataset root")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_cmd_info)

    from benchmarks import BENCHMARKS, describe

    names = sorted(BENCHMARKS)
    bench = sub.add_parser("bench", help="run a benchmark from benchmarks/ (prints one JSON line at the end)",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Runs benchmarks/bench_NAME.py: progress on stderr, one JSON line of figures "
                                       "on stdout.\n`simscale bench NAME --help` lists a benchmark's own flags.\n\n"
                                       + _listing("benchmarks", {n: describe(n) for n in names}))
    bench.add_argument("name", choices=names, metavar="NAME", help=f"the benchmark: {', '.join(names)}")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=_cmd_bench)

    ce = sub.add_parser("check-epdms", help="score golden NAVSIM cases (epdms-navsim-golden/1) and compare")
    ce.add_argument("file", type=Path, help="a JSON file of golden cases (the format of "
                                            "tests/fixtures/golden/epdms_navsim_cases.json)")
    ce.set_defaults(func=_cmd_check_epdms)

    cg = sub.add_parser("check-golden", help="compare against a golden folder of nuplan-devkit/NAVSIM outputs (the "
                                             "format of oracle_mini/); exit 1 on any mismatch",
                        description="Runs every comparison a golden folder allows (IDM traces, NAVSIM score cells, "
                                    "PDM-Closed plans, map API, scenario builder), prints per-file agreement tables "
                                    "and every mismatch, and ends with one JSON line of counts. Exit status: 0 when "
                                    "nothing differs, 1 on any mismatch, 2 on a user error (missing folder, corrupt "
                                    "file).")
    cg.add_argument("dir", type=Path, metavar="DIR",
                    help="golden folder: maps.tar.xz, logs/*.db.xz, navsim_logs/*.pkl.xz, idm_traces/*.json, "
                         "navsim_scores_*.json, devkit_scenarios.json, devkit_maps.json (each optional; a kind "
                         "whose files are absent is skipped and said so)")
    cg.add_argument("--cache", type=Path, default=None, metavar="DIR",
                    help="where the compressed archives are extracted, once (default: $SIMSCALE_CACHE/golden)")
    cg.add_argument("--source", default="nuplan", choices=("nuplan", "openscene"),
                    help="where scenarios come from: nuplan (default) the folder's .db logs; openscene its OpenScene "
                         "pickles alone, as NAVSIM read them (no .db opened): NAVSIM scores and PDM-Closed plans are "
                         "compared as usual, the devkit's IDM traces (made on the 20 Hz databases) are reported with "
                         "their deviation under trace_deviation, not as mismatches, and the .db scenario-builder "
                         "check is skipped")
    cg.add_argument("--max-mismatches", type=_int_at_least(0), default=200, metavar="N",
                    help="print at most N mismatch lines per kind, then a '... K more' line (the JSON counts stay "
                         "exact; default 200)")
    cg.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    cg.set_defaults(func=_cmd_check_golden)

    vocab = sub.add_parser("vocab", help="trajectory vocabularies and per-scene EPDMS labels (GTRS-style)")
    vsub = vocab.add_subparsers(dest="vocab_command", required=True, metavar="COMMAND", help="one of:")
    for name, helptext in (("build", "k-means over the human plans of a split -> .npy [K, poses, 3]"),
                           ("label", "score a vocabulary in every scene of a split -> DIR/<token>.npz (float16)")):
        v = vsub.add_parser(name, help=helptext)
        v.add_argument("--split", required=True, help="split name (navtrain, navtest, ...) or a scene_filter YAML")
        v.add_argument("--data", type=Path, default=None, help="nuPlan data root (default: env vars or the mini "
                                                                 "dataset)")
        v.add_argument("--maps", type=Path, default=None, help="nuPlan maps root (with --data)")
        v.add_argument("--out", required=True, type=Path,
                       help="the vocabulary .npy to write" if name == "build" else "folder of per-scene label files")
        v.add_argument("--interval", type=_positive_float, default=0.1, help="seconds between vocabulary poses")
        v.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "build":
            v.add_argument("--k", type=_int_at_least(1), default=8192, help="vocabulary size")
            v.add_argument("--poses", type=_int_at_least(1), default=40, help="poses per plan (default 40)")
            v.add_argument("--stride", type=_positive_float, default=0.5,
                           help="seconds between human plans along a log")
            v.add_argument("--iterations", type=_int_at_least(0), default=30, help="k-means iterations")
            v.add_argument("--seed", type=seed, default=0, help="k-means seed")
            v.set_defaults(func=_cmd_vocab_build)
        else:
            v.add_argument("--vocab", required=True, type=Path, help="the vocabulary .npy (`simscale vocab build`)")
            v.add_argument("--agents", default="non_reactive", choices=("non_reactive", "reactive",
                                                                        "constant_velocity"),
                           help="how the other agents move while a plan is scored (default non_reactive)")
            v.add_argument("--limit", type=_int_at_least(1), default=None, help="label only the first N scenes")
            v.add_argument("--ep-reference", default="pdm_closed", choices=("pdm_closed", "joint"),
                           help="EP normalisation: pairwise vs PDM-Closed (SimScale/GTRS) or joint over the vocabulary")
            v.add_argument("--scene-window", default="navsim", choices=("navsim", "nuplan"),
                           help="the state labelled: navsim (default) the token's own frame, as GTRS labels it and "
                                "the env starts; nuplan the first frame of its nuPlan window (3 s earlier)")
            v.set_defaults(func=_cmd_vocab_label)

    rd = sub.add_parser("render", help="render a scenario's cameras (Gaussian splatting), a BEV and a mosaic")
    rd.add_argument("--log", required=True, type=Path, help="nuPlan .db log")
    rd.add_argument("--token", required=True, type=_token, help="lidar_pc token the scenario is anchored at")
    rd.add_argument("--out", required=True, type=Path, help="output folder (created): CAM_*.png, bev.png, mosaic.png")
    rd.add_argument("--maps", type=Path, default=None, help="nuPlan maps root (default: beside the log's dataset, "
                                                            "or NUPLAN_MAPS_ROOT)")
    rd.add_argument("--iteration", type=_int_at_least(0), default=0,
                    help="the scenario iteration (0.1 s steps) to render, at the logged ego state (default 0)")
    rd.add_argument("--channels", default=ALL_CHANNELS, help="comma-separated camera channels (default: all eight)")
    rd.add_argument("--width", type=_int_at_least(8), default=480, help="image width in pixels (default 480)")
    rd.add_argument("--height", type=_int_at_least(8), default=224, help="image height in pixels (default 224)")
    rd.add_argument("--seed", type=seed, default=0, help="seed of the synthesised scene")
    rd.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"),
                    help="rasterizer: gsplat on CUDA, the CPU one, or auto (gsplat when CUDA is available)")
    rd.add_argument("--reconstructions", type=Path, default=None,
                    help="folder of 3DGS PLYs named <log_name>.ply or <map location>.ply (map coordinates)")
    rd.set_defaults(func=_cmd_render)

    from agents.baselines import AGENTS, DESCRIPTIONS

    ev = sub.add_parser("evaluate", help="benchmark a policy on a split (closed_loop, one_stage or two_stage) into a "
                                         "run directory with a report",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="simscale evaluate --policy SPEC --split NAME|FILE.yaml --mode MODE --out RUN_DIR\n"
                                    "scores a policy on every token of a split (one item per token, a pure function of "
                                    "the config,\nthe seed and the token's index) with --workers local processes or "
                                    "Ray, and writes RUN_DIR:\nresults.parquet, navsim.csv, aggregate.json (means and "
                                    "95 % bootstrap intervals), report.md,\nreport.html with plots and videos. A rerun "
                                    "into the same RUN_DIR resumes. Exit status 1 when items\nfailed (each is a row "
                                    "with its error), 2 on a user error.\n\nThe older form `simscale evaluate "
                                    "--agents A ...` runs closed_loop for each agent and prints one\ntable, then one "
                                    "JSON line.\n\n"
                                    + _listing("built-in policies (--policy or --agents)",
                                               {n: DESCRIPTIONS.get(n, "") for n in AGENTS}))
    ev.add_argument("--policy", default=None, metavar="SPEC",
                    help="the policy: a built-in name (above), 'package.module:Class' (with --policy-kwargs), or a "
                         "checkpoint path a registered loader reads (agents.load_policy)")
    ev.add_argument("--policy-kwargs", type=_json_object, default=None, metavar="JSON",
                    help="keyword arguments for the policy as a JSON object, e.g. '{\"k\": 1}'")
    ev.add_argument("--agents", nargs="+", default=None, choices=list(AGENTS), metavar="AGENT",
                    help=f"the older form: closed_loop for each of these built-in agents ({', '.join(AGENTS)}), one "
                         f"table; 'human' is the logged drive (info['logged_plan']) from the logged start, the others "
                         f"start perturbed (default when --policy is not given: pdm_closed constant_velocity "
                         f"stand_still)")
    ev.add_argument("--split", default="navhard", metavar="NAME|FILE.yaml",
                    help="a split name (navhard, navtest, navtrain, or their mini- versions: mini-navhard, ...) or "
                         "a NAVSIM scene_filter YAML (default navhard: mini-navhard on the mini dataset)")
    ev.add_argument("--mode", default="closed_loop", choices=("closed_loop", "one_stage", "two_stage"),
                    help="closed_loop: full episodes from perturbed starts, reactive agents, episode EPDMS; "
                         "one_stage: NAVSIM's navtest score (one plan at the logged start, pseudo-simulated 4 s); "
                         "two_stage: NAVSIM's navhard score (stage 1, then generated stage-2 starts) "
                         "(default closed_loop)")
    ev.add_argument("--seed", type=seed, default=0, help="item k (the split's k-th token) is seeded from seed + k "
                                                          "(default 0)")
    ev.add_argument("--workers", type=_int_at_least(1), default=1, metavar="K",
                    help="local worker processes (or Ray actors with --ray), each building its env and policy once "
                         "(default 1: in this process)")
    ev.add_argument("--ray", action="store_true",
                    help="run the items as Ray actors (a local Ray with K CPUs, or the cluster of --ray-address); "
                         "needs pip install 'simscale[ray]'")
    ev.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="the Ray cluster to join, e.g. ray://head:10001 or auto (implies --ray)")
    ev.add_argument("--traffic", default="non_reactive", choices=("non_reactive", "reactive"),
                    help="one_stage: how the other agents move while the plan is pseudo-simulated (default "
                         "non_reactive, NAVSIM's navtest); two_stage is always reactive")
    ev.add_argument("--ec-partner", default="split", choices=("split", "always"),
                    help="one_stage EC: 'split' (NAVSIM: only for tokens whose frame 0.5 s earlier is in the split "
                         "too; default) or 'always' (ours: the policy also plans at the frame 0.5 s earlier)")
    ev.add_argument("--stage2-starts", type=_int_at_least(1), default=10, metavar="N",
                    help="two_stage: generated stage-2 start pairs per token (default 10)")
    ev.add_argument("--out", type=Path, default=None, metavar="RUN_DIR",
                    help="the run directory (created; a rerun with the same config resumes, another config there is "
                         "an error); required with --policy; with --agents one RUN_DIR/AGENT per agent")
    ev.add_argument("--tokens", nargs="+", type=_token, default=None, metavar="TOKEN",
                    help="only these tokens of the split (each keeps its index, so its row is the one a full run "
                         "gives)")
    ev.add_argument("--no-videos", action="store_true",
                    help="no MP4 videos of the best and worst episodes in the report")
    ev.add_argument("--data", type=Path, default=None, help="mini dataset folder (default: the cache or env vars)")
    ev.add_argument("--openscene", type=Path, default=None, metavar="DIR",
                    help="OpenScene data root (navsim_logs/<split>/*.pkl; default OPENSCENE_DATA_ROOT): scenarios "
                         "from NAVSIM's logs without nuPlan databases; needs --maps or NUPLAN_MAPS_ROOT")
    ev.add_argument("--maps", type=Path, default=None, metavar="DIR",
                    help="nuPlan maps root (default NUPLAN_MAPS_ROOT)")
    ev.add_argument("--source", default="auto", choices=("auto", "nuplan", "openscene"),
                    help="where scenarios come from: the nuPlan .db logs, the OpenScene pickles, or auto (the .db logs "
                         "where the data has them; default)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    ev.set_defaults(func=_cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="compare evaluation runs side by side: one table (Markdown + CSV) and one "
                                          "plot with the 95 % intervals",
                          description="Reads each RUN_DIR's aggregate.json (simscale evaluate --out RUN_DIR), prints "
                                      "a Markdown table and writes compare.md, compare.csv and compare.png into --out.")
    cmp_.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories of simscale evaluate")
    cmp_.add_argument("--out", type=Path, default=Path("compare"), metavar="DIR",
                      help="where compare.md, compare.csv and compare.png go (created; default ./compare)")
    cmp_.set_defaults(func=_cmd_compare)

    exp = sub.add_parser("export", help="a generation run (simscale generate) in NAVSIM's OpenScene layout",
                         description="Writes OUT/navsim_logs/SPLIT/*.pkl (one synthetic log per sample: 4 history "
                                     "frames and 8 label frames), OUT/sensor_blobs/SPLIT/TOKEN/CAM_*/*.jpg and the "
                                     "scene_filter OUT/splits/SPLIT.yaml. RUN_DIR is only read.")
    exp.add_argument("--format", default="openscene", choices=("openscene",), help="output format (openscene)")
    exp.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder of simscale generate (manifest.json)")
    exp.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")
    exp.add_argument("--split", type=_split_name, default="simscale", metavar="NAME",
                     help="split folder and scene_filter name (default simscale)")
    exp.set_defaults(func=_cmd_export)

    gen = sub.add_parser("generate", help="SimScale's data generation rounds: perturbed starts, pseudo-expert labels, "
                                          "cameras, as Parquet shards with a manifest (resumable; workers or Ray)",
                         description="simscale generate --split S --rounds R --expert E --seed S --out DIR\n"
                                     "runs R nested rounds (round r+1 on the base tokens valid in round r) and writes "
                                     "Parquet shards and manifest.json into DIR. Exit status 1 when tasks failed, 2 on "
                                     "a user error.", formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--split", default="mini-navtrain", metavar="NAME|FILE.yaml",
                     help="the base scenes: a split name or a NAVSIM scene_filter YAML (default mini-navtrain)")
    gen.add_argument("--rounds", type=_int_at_least(1), default=1, metavar="R", help="generation rounds (default 1)")
    gen.add_argument("--expert", default="pdm_closed", choices=("pdm_closed", "recovery"),
                     help="the pseudo-expert that labels each sample (default pdm_closed)")
    gen.add_argument("--seed", type=seed, default=0, help="the run seed; task (token, round) is seeded from it "
                                                           "(default 0)")
    gen.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="the run folder (created; must be empty or new, or this run with --resume)")
    gen.add_argument("--cameras", default="CAM_L0,CAM_F0,CAM_R0", metavar="all|CH,CH",
                     help="camera channels rendered for the 4 history frames: 'all' (8) or a comma-separated list "
                          "(default CAM_L0,CAM_F0,CAM_R0)")
    gen.add_argument("--width", type=_int_at_least(16), default=480, metavar="W", help="image width (default 480)")
    gen.add_argument("--height", type=_int_at_least(16), default=224, metavar="H", help="image height (default 224)")
    gen.add_argument("--threshold", type=_positive_float, default=0.8, metavar="X",
                     help="minimum EPDMS of the expert's label for a valid sample (default 0.8)")
    gen.add_argument("--vocab", type=Path, default=None, metavar="V.npy",
                     help="a trajectory vocabulary [K, poses, 3]: adds float16 EPDMS sub-score labels per trajectory")
    gen.add_argument("--workers", type=_int_at_least(1), default=1, metavar="K",
                     help="local worker processes (or Ray actors with --ray), each building its env once (default 1)")
    gen.add_argument("--ray", action="store_true", help="run the tasks as Ray actors (a local Ray with K CPUs, or the "
                                                        "cluster of --ray-address)")
    gen.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="the Ray cluster to join, e.g. HEAD:6379 or ray://HEAD:10001 (implies --ray)")
    gen.add_argument("--resume", action="store_true", help="continue a killed run in --out (same config)")
    gen.add_argument("--shard-mb", type=_positive_float, default=256.0, metavar="MB",
                     help="approximate size of a Parquet shard (default 256)")
    gen.add_argument("--data", type=Path, default=None, help="mini dataset folder (default: the cache or env vars)")
    gen.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    gen.set_defaults(func=_cmd_generate)

    tr = sub.add_parser("train", help="train a learned planner (ltf, diffusiondrive, gtrs_dense) on real and/or sim "
                                      "samples; checkpoints every epoch, resumable, TensorBoard + CSV",
                        description="simscale train --planner P --real SPLIT [--sim DIR ...] [--rewards-only] "
                                    "--epochs N --out RUN_DIR\ntrains P and writes config.json, checkpoint.pt (loads "
                                    "as a policy: simscale evaluate --policy RUN_DIR/checkpoint.pt), metrics.csv, tb/ "
                                    "and the final evaluation eval/ into RUN_DIR.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--planner", required=True, metavar="NAME",
                    help="the planner: ltf, diffusiondrive, gtrs_dense (CPU sizes) or a NAVSIM-size preset "
                         "ltf_navsim, diffusiondrive_navsim, gtrs_dense_navsim (agents.planners)")
    tr.add_argument("--real", default="mini-navtrain", metavar="SPLIT|none",
                    help="real samples: a split name or scene_filter YAML (default mini-navtrain); 'none': sim only")
    tr.add_argument("--sim", nargs="*", type=Path, default=[], metavar="DIR",
                    help="sim samples: run folders of simscale generate")
    tr.add_argument("--rewards-only", action="store_true",
                    help="no imitation loss on sim samples (reward losses on both), SimScale's rewards-only")
    tr.add_argument("--sim-ratio", type=float, default=None, metavar="R",
                    help="the share of sim samples in every batch (default: the union sampled uniformly)")
    tr.add_argument("--vocab", type=Path, default=None, metavar="V.npy",
                    help="gtrs_dense: the trajectory vocabulary (simscale vocab build)")
    tr.add_argument("--vocab-labels", type=Path, default=None, metavar="DIR",
                    help="gtrs_dense: the real split's labels (simscale vocab label; default: labelled into the cache)")
    tr.add_argument("--epochs", type=_int_at_least(1), default=4, metavar="N", help="epochs (default 4)")
    tr.add_argument("--batch-size", type=_int_at_least(1), default=16, metavar="B", help="batch size (default 16)")
    tr.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: the planner's recipe)")
    tr.add_argument("--set", dest="planner_config", action="append", metavar="KEY=VALUE",
                    help="a planner config field, e.g. --set backbone=resnet34 --set 'image_size=[1024,256]'")
    tr.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    tr.add_argument("--workers", type=_int_at_least(0), default=0, metavar="K",
                    help="data-loading worker processes (default 0: in this process)")
    tr.add_argument("--threads", type=_int_at_least(1), default=1, metavar="T",
                    help="torch threads of the training loop (default 1: the loss sequence depends on it)")
    tr.add_argument("--max-steps", type=_int_at_least(1), default=None, metavar="N",
                    help="at most N optimisation steps per epoch (quick runs)")
    tr.add_argument("--eval-split", default="mini-navhard", metavar="SPLIT|none",
                    help="evaluate the final checkpoint on this split (default mini-navhard; 'none': skip)")
    tr.add_argument("--eval-mode", default="closed_loop", choices=("closed_loop", "one_stage", "two_stage"),
                    help="the final evaluation's mode (default closed_loop)")
    tr.add_argument("--eval-workers", type=_int_at_least(1), default=1, metavar="K",
                    help="worker processes of the final evaluation (default 1)")
    tr.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                    help="the run folder (created; must be empty or new, or this run with --resume)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--data", type=Path, default=None, help="mini dataset folder (default: the cache or env vars)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    tr.set_defaults(func=_cmd_train)

    from training import bc as _bc, rl as _rl

    tbc = sub.add_parser("train-bc", help="online imitation of a pseudo-expert in the env: DAgger rounds (beta "
                                          "schedule between expert and learner), privileged observations or cameras",
                         description="simscale train-bc --split S --rounds R --episodes E --epochs N --out DIR\n"
                                     "collects (observation, expert plan) pairs on the states the mixture visits, "
                                     "trains on the aggregate after every round; DIR/bc.pt loads as a policy "
                                     "(simscale evaluate --policy DIR/bc.pt).",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _bc.add_arguments(tbc)
    tbc.set_defaults(func=_cmd_train_bc)
    trl = sub.add_parser("train-rl", help="stable-baselines3 PPO on the env (privileged observations by default; "
                                          "residual on the pseudo-expert or a normalised plan action)",
                         description="simscale train-rl --algo ppo --split S --timesteps N --out DIR\nlogs episode "
                                     "EPDMS and its sub-scores to TensorBoard and CSV; DIR/ppo.zip loads as a policy "
                                     "(simscale evaluate --policy DIR/ppo.zip).",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _rl.add_arguments(trl)
    trl.set_defaults(func=_cmd_train_rl)

    from evaluation import experiment as _experiment

    xp = sub.add_parser("experiment", help="reproducible experiments: `simscale experiment simscale` (real-only vs sim "
                                           "co-training, scaling with rounds, planner vs recovery experts)")
    xsub = xp.add_subparsers(dest="experiment_name", required=True, metavar="NAME", help="one of: simscale")
    xs = xsub.add_parser("simscale", help="generate the sim rounds, train every (planner, expert, rounds, seed) cell, "
                                          "evaluate each on mini-navhard; table, plot and summary (resumable)",
                         description="simscale experiment simscale --planners gtrs_dense,ltf --experts "
                                     "pdm_closed,recovery --rounds 0,1,2,3 --seeds 3 --out DIR [--ray]",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _experiment.add_arguments(xs)
    xs.set_defaults(func=_cmd_experiment)

    demo = sub.add_parser("demo", help="the main job of `make demo`")
    demo.add_argument("--data", type=Path, default=None, help="mini dataset folder (default: the cache)")
    demo.add_argument("--out", type=Path, default=Path(".cache") / "demo", help="where the video goes")
    demo.add_argument("--seed", type=seed, default=0, help="reset seed of the episode (default 0)")
    demo.add_argument("--source", default="auto", choices=("auto", "nuplan", "openscene"),
                      help="scenarios from the dataset's nuPlan .db logs or its OpenScene pickles (default auto: the "
                           ".db logs where present)")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    """Run a command. Its user errors (every SimScaleError, and OS errors such as an output path that is a file) are
    one line `simscale: error: ...` on stderr with exit status 2; argparse misuse too (a SystemExit(2) from the
    parser, as `--help` is a SystemExit(0))."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for the records of a run
    try:
        return int(args.func(args) or 0)
    except SimScaleError as exc:
        print(f"simscale: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's paths: permissions, a file where a folder should be, a full disk
        msg = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"simscale: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simscale: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
