"""`simscale bench experts`: closed-loop sanity of the pseudo-experts on every scenario of mini-navhard.

A scenario is NAVSIM's scene of its token, as the env loads it by default (`scene_window="navsim"`,
`data.scenario.extract_navsim_scenario`): iteration 0 is the token's frame, 1.5 s of past before it, the episode
runs to 12 s after the token where the log has it (`--nuplan-window`: nuPlan's challenge window, 15 s from 3 s
before the token, as before issue 13).
Each scenario is started `--starts` times (default 3) from navhard perturbations of the logged ego (seeded per
scenario; the split's window sampler, SimScale's model, or `--teleport`) and driven to its end with reactive IDM
agents by (a) PDM-Closed replanning every step (10 Hz, as nuPlan's closed loop) and (b) the recovery expert
replanning every 0.5 s; (c) the human log is replayed from the unperturbed start in the same reactive world.
Episode sub-metrics come from `episode_summary` (EP against the human's progress) with NAVSIM's human filter against
(c) judged alone without a past, as NAVSIM's evaluation applies it. HC prepends the past before the start, as the
env's episode summary does (`envs.history`): the perturbed past the ego drove in to a perturbed start
(`start_past_states`, sampled by `hc_past`) for (a) and (b), the logged past (`logged_hc_past`) for the reported
human (c), itself filtered against (c) judged alone, as the env scores the logged human. Rates and means are over
starts.

Starts: a perturbation is kept when it passes the sampler's checks (on the road, clear of objects and of red
connectors, not leaving the road within the reaction time), the perturbed past the ego drove in passes EPDMS's
comfort checks (as the env's `comfortable_past`), and PDM-Closed's first label, its 8 poses scored as
NAVSIM scores a submitted plan, is safe (`valid_start`: NC, DAC, DDC, TLC all 1, TLC after NAVSIM's human filter):
SimScale likewise keeps only states with a valid pseudo-expert (about half of the sampled scenes, SimScale issue
#10). Redraws are counted
in `rejected_starts`; scenarios without any valid start (under the window sampler a log standing over the window has
nothing to perturb) in `skipped_scenarios`, with the reason on stderr.
Rejoin rate (`recovery_rejoin_rate`, every start): the share of starts whose closed-loop ego, driven by the recovery
expert, is within 0.5 m of the logged path, 3 deg of its heading and 0.5 m/s of the logged speed at 4 s
(`closed_loop_rejoin`). `recovery_rejoin_rate_moving_log` counts only starts whose logged ego moves >= 5 m in those
4 s (a standing log with an ego offset sideways cannot be rejoined driving forward). `recovery_plan_rejoin_rate`:
starts where the expert's first plan rejoins within its horizon (the rest it judges infeasible or unsafe and falls
back, or comes short); `recovery_rejoin_rate_when_planned`: the closed-loop rate over those starts.

PDM-Closed is NAVSIM's copy, the env's pseudo-expert (`pdm_closed_*`); it is run a second time with tuplan's
emergency brake (`pdm_closed_brake_*`, the closed-loop PDM-Closed of the nuPlan challenge; `pdm_closed_brake_share`:
the share of its calls that braked; `--no-brake-variant` skips it). `plan_ms` times NAVSIM's copy.

Targets (issue 5): PDM-Closed mean episode EPDMS >= 0.85, at-fault collision rate <= 3 %, off-road rate <= 2 %; the
recovery expert rejoins within 4 s in >= 90 % of the starts; PDM-Closed planning <= 20 ms per call on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import zlib
from pathlib import Path


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench experts")
    ap.add_argument("--data", type=Path, default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--split", default="navhard", help="split name (default navhard)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N scenarios")
    ap.add_argument("--steps", type=int, default=None, help="episode length in steps (default: to the end)")
    ap.add_argument("--starts", type=int, default=3, help="perturbed starts per scenario (default 3)")
    ap.add_argument("--no-brake-variant", dest="brake_variant", action="store_false",
                    help="skip the second PDM-Closed run with tuplan's emergency brake")
    ap.add_argument("--max-draws", type=int, default=20, help="perturbations tried per scenario for a valid start")
    ap.add_argument("--window", type=float, default=None, metavar="S",
                    help="the window sampler's window in seconds (default: the split's, 2 s)")
    ap.add_argument("--teleport", action="store_true",
                    help="the teleport sampler (independent offsets) instead of the split's window sampler")
    ap.add_argument("--nuplan-window", dest="nuplan_window", action="store_true",
                    help="nuPlan's challenge window (15 s from 3 s before the token) instead of NAVSIM's scene")
    args = ap.parse_args(argv)
    if args.starts < 1:
        ap.error("--starts must be >= 1")
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    import numpy as np

    from simscale_env.data import ScenarioBuilder
    from simscale_env.data.openscene import load_split
    from simscale_env.data.paths import DataConfig, ensure_mini
    from simscale_env.envs.history import hc_past, past_is_comfortable, start_past_states
    from simscale_env.experts import (PDMClosedConfig, PDMClosedPlanner, drive, logged_reference, recovery_plan,
                                      valid_start)
    from simscale_env.map import load_map
    from simscale_env.metrics import episode_summary
    from simscale_env.metrics.pseudo_sim import logged_hc_past
    from simscale_env.sim import SimConfig, Simulation
    from simscale_env.sim.perturb import PERTURBATION_DEFAULTS, PerturbationError, logged_travel, sample_perturbation

    root = ensure_mini(args.data)
    cfg = DataConfig(root, root / "maps", root, "mini", True)
    spec = load_split(cfg.split_file(args.split))
    builder = ScenarioBuilder(cfg.log_dir)
    tokens = list(spec.tokens or [r.token for r in builder.refs()])[: args.limit]
    pert = PERTURBATION_DEFAULTS.get(args.split, PERTURBATION_DEFAULTS["navhard"])
    if args.teleport and args.window is not None:
        ap.error("--teleport and --window exclude each other")
    if args.teleport:
        pert = dataclasses.replace(pert, window_s=None)
    elif args.window is not None:
        pert = dataclasses.replace(pert, window_s=args.window)
    rows = []
    rejected = skipped = 0
    plan_times: list[float] = []
    brakes: list[bool] = []
    t_start = time.perf_counter()
    for n, tok in enumerate(tokens):
        sc = builder.load(tok) if args.nuplan_window else load_navsim_scenario(builder, tok)
        m = load_map(sc.map_location, cfg.nuplan_maps_root)
        sim = Simulation(sc, m, SimConfig(agent_mode="reactive"))
        steps = min(args.steps or sim.num_iterations - 1, sim.num_iterations - 1)
        w0 = sim.reset()
        route_lanes = m.route_lane_ids([r for r in sc.route_roadblock_ids if r in m.roadblocks])
        red = list(sim.red_light_polygons(0, route_lanes).values())
        rng = np.random.default_rng(zlib.crc32(tok.encode()))
        travel = (logged_travel(sc.ego.x, sc.ego.y, sim.frame(0), int(round(pert.window_s / sc.dt_s)))
                  if pert.window_s is not None else None)
        starts = []
        for _ in range(args.starts):
            start = None
            for _ in range(args.max_draws):
                try:
                    p, cand = sample_perturbation(w0.ego, m, sim.objects(w0).corners(), rng, pert, scene=tok,
                                                  red_polygons=red, travel_m=travel)
                except PerturbationError as exc:
                    print(f"[{n + 1}/{len(tokens)}] {tok}: skipped ({exc})", file=sys.stderr)
                    break
                # as the env (comfortable_past): the perturbed past HC prepends passes the comfort checks
                if past_is_comfortable(sc, cand, p) and valid_start(sim, sim.reset(cand)):
                    start = (p, cand)
                    break
                rejected += 1
            else:
                print(f"[{n + 1}/{len(tokens)}] {tok}: no valid start in {args.max_draws} draws (an uncomfortable "
                      f"perturbed past or no safe PDM-Closed label: comfortable_past, valid_start)", file=sys.stderr)
            if start is None:
                break
            starts.append(start)
        if not starts:
            skipped += 1
            continue
        # (c) the human log, unperturbed, same reactive world (the reference of the human filter)
        wh = [sim.reset()]
        for i in range(1, steps + 1):
            wh.append(sim.step(wh[-1], ego_state=sim.logged_ego_state(i)))
        human = episode_summary(sim, wh)["scores"]  # the filter's human: judged alone, without a past
        s_h = episode_summary(sim, wh, human=human, past_states=logged_hc_past(sim, 0))
        ref = logged_reference(sim, 0, 4.0)
        moves = float(np.interp(4.0, ref.times, ref.s) - np.interp(0.0, ref.times, ref.s)) >= 5.0
        for j, (p, start) in enumerate(starts):
            # the past HC prepends: the perturbed past the ego drove in to this start (as the env's summary)
            past = hc_past(start_past_states(sc, start, p), start, sim.reset(start).time_us, sc.dt_s)
            # (a) PDM-Closed, every step: NAVSIM's (the env's pseudo-expert) and, beside it, with tuplan's brake
            s_pdm = run_pdm(sim, start, steps, human, PDMClosedConfig(), times=plan_times, past=past)
            s_brk = (run_pdm(sim, start, steps, human, PDMClosedConfig(emergency_brake=True), braked=brakes,
                             past=past) if args.brake_variant else None)
            # (b) recovery, every 0.5 s
            first = []
            ws_r = drive(sim, sim.reset(start), lambda s, w: recovery_plan(s, w, fallback=PDMClosedPlanner()),
                         steps, replan_every=5, on_plan=lambda w, plan: first.append(plan) if not first else None)
            s_rec = episode_summary(sim, ws_r, human=human, past_states=past)
            rejoined = closed_loop_rejoin(ref, ws_r)
            rows.append({"token": tok, "type": sc.scenario_type, "pdm": s_pdm, "brake": s_brk, "rec": s_rec,
                         "human": s_h, "moves": moves, "rec_source": first[0].source if first else "",
                         "rec_plan_rejoins": bool(first and first[0].source == "recovery"
                                                      and first[0].info["rejoins_within_horizon"]), "rec_rejoined": rejoined})
            pd = {k: round(v, 2) for k, v in p.as_dict().items()}
            print(f"[{n + 1}/{len(tokens)}] {tok}#{j} {sc.scenario_type:<32} "
                  f"({pd['lateral_m']:+.1f} m, {pd['longitudinal_m']:+.1f} m, {pd['heading_deg']:+.0f} deg, "
                  f"x{pd['speed_scale']:.2f}) pdm {s_pdm['epdms']:.3f} "
                  f"(nc {s_pdm['no_at_fault_collisions']:.1f} dac {s_pdm['drivable_area_compliance']:.0f} "
                  f"tlc {s_pdm['traffic_light_compliance']:.0f} ep {s_pdm['ego_progress']:.2f} "
                  f"ttc {s_pdm['time_to_collision_within_bound']:.0f} lk {s_pdm['lane_keeping']:.0f} "
                  f"hc {s_pdm['history_comfort']:.0f}) "
                  + (f"braking {s_brk['epdms']:.3f} (nc {s_brk['no_at_fault_collisions']:.1f}) " if s_brk else "") +
                  f"recovery {s_rec['epdms']:.3f} (nc {s_rec['no_at_fault_collisions']:.1f} "
                  f"dac {s_rec['drivable_area_compliance']:.0f} ddc {s_rec['driving_direction_compliance']:.1f} "
                  f"tlc {s_rec['traffic_light_compliance']:.0f} ttc {s_rec['time_to_collision_within_bound']:.0f} "
                  f"lk {s_rec['lane_keeping']:.0f} hc {s_rec['history_comfort']:.0f}) "
                  f"{first[0].source if first else '-'} rejoined {rejoined} (log moves {moves}) "
                  f"human {s_h['epdms']:.3f}", file=sys.stderr)
    if not rows:
        print("simscale: error: no scenario could be perturbed", file=sys.stderr)
        return 2
    k = len(rows)

    def mean(key, who):
        return float(np.mean([r[who][key] for r in rows]))

    out = {
        "scenarios": len({r["token"] for r in rows}),
        "starts": k,
        "rejected_starts": rejected,
        "skipped_scenarios": skipped,
        "pdm_closed_epdms": round(mean("epdms", "pdm"), 4),
        "pdm_closed_collision_rate": round(float(np.mean([r["pdm"]["at_fault_collision"] for r in rows])), 4),
        "pdm_closed_offroad_rate": round(float(np.mean([r["pdm"]["off_road"] for r in rows])), 4),
        **({"pdm_closed_brake_epdms": round(mean("epdms", "brake"), 4),
            "pdm_closed_brake_collision_rate": round(float(np.mean([r["brake"]["at_fault_collision"] for r in rows])),
                                                     4),
            "pdm_closed_brake_offroad_rate": round(float(np.mean([r["brake"]["off_road"] for r in rows])), 4),
            "pdm_closed_brake_share": round(float(np.mean(brakes)), 4)} if args.brake_variant else {}),
        "recovery_rejoin_rate": round(float(np.mean([r["rec_rejoined"] for r in rows])), 4),
        "recovery_rejoin_rate_moving_log": round(
            float(np.mean([r["rec_rejoined"] for r in rows if r["moves"]] or [np.nan])), 4),
        "moving_log_starts": int(sum(r["moves"] for r in rows)),
        # the expert's first plan rejoins within its 4 s (tracked, checked); and, of those starts, the closed loop
        "recovery_plan_rejoin_rate": round(float(np.mean([r["rec_plan_rejoins"] for r in rows])), 4),
        "recovery_rejoin_rate_when_planned": round(
            float(np.mean([r["rec_rejoined"] for r in rows if r["rec_plan_rejoins"]] or [np.nan])), 4),
        "recovery_epdms": round(mean("epdms", "rec"), 4),
        "human_epdms": round(mean("epdms", "human"), 4),
        "plan_ms": round(1000 * float(np.mean(plan_times)), 2),
        "plan_ms_p95": round(1000 * float(np.percentile(plan_times, 95)), 2),
        "perturbation": "teleport" if pert.window_s is None else f"window {pert.window_s:g} s",
        "scene_window": "nuplan" if args.nuplan_window else "navsim",
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))
    return 0


def load_navsim_scenario(builder, token):
    """NAVSIM's scene of `token` as the env loads it (`scene_window="navsim"`): a tagged scenario's log, else the
    split's log holding that frame."""
    from simscale_env.data.scenario import NAVSIM_SCENE_DURATION_S, extract_navsim_scenario
    from simscale_env.errors import UnknownTokenError

    try:
        ref = builder.ref(token)
        db, kind = builder.db(ref.log_name), ref.scenario_type
    except UnknownTokenError:  # a NAVSIM token need not be a tagged nuPlan scenario: any 2 Hz frame
        db = next((builder.db(n) for n in sorted(builder.log_files) if token in builder.db(n).lidar_pc_tokens), None)
        if db is None:
            raise
        kind = None
    return extract_navsim_scenario(db, token, scenario_type=kind, duration_s=NAVSIM_SCENE_DURATION_S)


def run_pdm(sim, start, steps, human, config, times=None, braked=None, past=None) -> dict:
    """The episode summary of PDM-Closed (`config`) replanning every step from `start` (HC with `past` prepended);
    appends each call's time to `times` and whether it braked to `braked`."""
    from simscale_env.experts import PDMClosedPlanner, drive
    from simscale_env.metrics import episode_summary

    pdm = PDMClosedPlanner(config)

    def timed(s, w):
        t = time.perf_counter()
        out = pdm.plan(s, w)
        if times is not None:
            times.append(time.perf_counter() - t)
        if braked is not None:
            braked.append(out.source == "emergency_brake")
        return out

    return episode_summary(sim, drive(sim, sim.reset(start), timed, steps, replan_every=1), human=human,
                           past_states=past)


def closed_loop_rejoin(ref, worlds, dt: float = 0.1, horizon_s: float = 4.0, position_m: float = 0.5,
                       heading_deg: float = 3.0, speed_mps: float = 0.5) -> bool:
    """Rejoined in closed loop within the horizon: at `horizon_s` the ego is within `position_m` of the logged
    path (cross-track), `heading_deg` of its heading and `speed_mps` of the logged speed at that time (the expert's
    own definition, `measured_rejoin`: the log itself or the log shifted along its path, so a shifted rejoin counts).
    ("Comes within the tolerances by the horizon and stays within them up to it" reduces to this.)"""
    import numpy as np

    from simscale_env.geometry import wrap_angle

    k = int(round(horizon_s / dt))
    if len(worlds) <= k:
        return False
    ego = np.asarray(worlds[k].ego, dtype=np.float64)
    s, lat, _ = ref.path.project(ego[None, :2])
    herr = abs(float(wrap_angle(ego[2] - ref.path.interpolate(s[0])[2])))
    v_log = float(np.interp(horizon_s, ref.times, ref.v))
    return bool(abs(lat[0]) <= position_m and herr <= np.radians(heading_deg) and abs(ego[3] - v_log) <= speed_mps)
