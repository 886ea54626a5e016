#!/usr/bin/env python3
"""Scores a fusion_replay output against fusion_sim's ground truth.

    evaluate_replay.py BAG_DIR REPLAY_DIR [--json]

Events: a ground-truth event is detected when an event of the same kind (and, for sensor
events, naming that sensor) fires between 0.5 s before its onset and 1 s after its end;
its delay is the first such event's stamp minus the onset. An event that matches no
ground-truth window of its kind (±1 s) is a false alarm.

Tracking: CLEAR-MOT MOTA = 1 - (misses + false positives + id switches) / ground-truth
objects, per synchronized set, over actors within the evaluation region (|x| <= 40 m,
|y| <= 15 m in base_link) that the LiDAR or the radar returned from at that stamp (as
nuScenes counts only boxes with a return); a track on an actor no sensor saw is neither
a hit nor a false positive. Matches are greedy by centre distance up to 2 m.

Labels: over the same matches, the share of published (confirmed) tracks whose label is
the actor's true class, overall and per class (an `unknown` label counts as wrong).

Motion: the ego speed each set was fused with (from odometry, else estimated from the
radar) against the true speed, and each matched object's ground velocity against the
actor's (both in base_link axes): coverage, p50/p95 errors and the share within 0.3 m/s.
With odometry, each matched object's velocity in the odometry frame against the actor's in
the world (the simulator's odometry frame: the ego starts at its origin heading +x), the
truth turned from base_link by the ego's true heading.
"""
import argparse
import json
import math
import pathlib
import sys

REGION_X, REGION_Y, MATCH_M = 40.0, 15.0, 2.0


def load_truth(bag):
    frames, events, hits = {}, [], {}
    ego_speeds, ego_yaws = {}, {}
    for line in open(pathlib.Path(bag) / "ground_truth.jsonl"):
        r = json.loads(line)
        if r["type"] == "frame":
            frames[r["stamp_ns"]] = r["actors"]
            if "ego" in r:
                ego_speeds[r["stamp_ns"]] = r["ego"]["speed"]
                ego_yaws[r["stamp_ns"]] = r["ego"]["yaw"]
        elif r["type"] == "event":
            events.append(r)
        elif r["type"] in ("lidar_hits", "radar_hits"):
            seen = hits.setdefault(r["stamp_ns"], set())
            seen.update(int(k) for k, n in r["hits"].items() if n > 0)
    # An actor counts as a tracking target in a set when a range sensor returned from it.
    for stamp, actors in frames.items():
        frames[stamp] = [dict(a, sensed=a["id"] in hits.get(stamp, set())) for a in actors]
    return frames, events, ego_speeds, ego_yaws


def load_replay(out):
    out = pathlib.Path(out)
    events = [json.loads(l) for l in open(out / "events.jsonl")]
    sets = [json.loads(l) for l in open(out / "objects.jsonl")]
    return events, sets


def score_events(truth, events):
    detected, delays, matched_pred = [], [], set()
    for g in truth:
        lo, hi = g["onset_ns"] - 500_000_000, g["offset_ns"] + 1_000_000_000
        hits = [
            i for i, e in enumerate(events)
            if e["kind"] == g["kind"] and lo <= e["stamp_ns"] <= hi
            and (g.get("sensor") is None or g["sensor"] in e["sensors"])
        ]
        matched_pred.update(hits)
        if hits:
            first = min(events[i]["stamp_ns"] for i in hits)
            delays.append((first - g["onset_ns"]) / 1e9)
        detected.append({"kind": g["kind"], "sensor": g.get("sensor"), "onset_s": g["onset_ns"] / 1e9,
                         "detected": bool(hits),
                         "delay_s": (min(events[i]["stamp_ns"] for i in hits) - g["onset_ns"]) / 1e9 if hits else None})
    false_alarms = []
    for i, e in enumerate(events):
        if i in matched_pred:
            continue
        near = any(g["kind"] == e["kind"] and g["onset_ns"] - 1e9 <= e["stamp_ns"] <= g["offset_ns"] + 1e9 for g in truth)
        if not near:
            false_alarms.append(e)
    return detected, delays, false_alarms


def dist(a, o):
    return ((a["center"][0] - o["center"][0]) ** 2 + (a["center"][1] - o["center"][1]) ** 2) ** 0.5


def in_region(x, y):
    return abs(x) <= REGION_X and abs(y) <= REGION_Y


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def motion_errors(errors, total):
    return {"estimated": len(errors), "of": total, "p50": quantile(errors, 0.5), "p95": quantile(errors, 0.95),
            "within_0_3": sum(e <= 0.3 for e in errors) / len(errors) if errors else None}


def score_tracking(frames, sets, ego_truth=None, ego_yaws=None):
    gt_total = misses = fps = switches = 0
    ego_truth, ego_yaws = ego_truth or {}, ego_yaws or {}
    ego_errors, ego_total, ground_errors, ground_total = [], 0, [], 0
    odom_errors, odom_total = [], 0
    # A run with odometry (any set names its frame) owes every matched object a velocity in it.
    has_odometry = any(s.get("odom_frame") is not None for s in sets)
    last_match = {}
    labels = {}  # true class -> [correct, matched]
    for s in sets:
        actors = frames.get(s["stamp_ns"])
        if actors is None:
            continue
        if s["stamp_ns"] in ego_truth:
            ego_total += 1
            if s.get("ego_speed") is not None:
                ego_errors.append(abs(s["ego_speed"] - ego_truth[s["stamp_ns"]]))
        gts = [a for a in actors if a["sensed"] and in_region(a["center"][0], a["center"][1])]
        # Objects matched to an actor no sensor saw (a coasting track) are not false positives.
        unsensed = [a for a in actors if not a["sensed"] and in_region(a["center"][0], a["center"][1])]
        preds = [o for o in s["objects"] if in_region(o["center"][0], o["center"][1])
                 and not any(dist(a, o) <= MATCH_M for a in unsensed)]
        pairs = sorted(
            (((a["center"][0] - o["center"][0]) ** 2 + (a["center"][1] - o["center"][1]) ** 2) ** 0.5, gi, pi)
            for gi, a in enumerate(gts) for pi, o in enumerate(preds)
        )
        used_g, used_p = set(), set()
        for d, gi, pi in pairs:
            if d > MATCH_M or gi in used_g or pi in used_p:
                continue
            used_g.add(gi)
            used_p.add(pi)
            gid, tid = gts[gi]["id"], preds[pi]["track_id"]
            if gid in last_match and last_match[gid] != tid:
                switches += 1
            last_match[gid] = tid
            ground_total += 1
            gv = preds[pi].get("ground_velocity")
            if gv is not None:
                tv = gts[gi]["velocity"]
                ground_errors.append(((gv[0] - tv[0]) ** 2 + (gv[1] - tv[1]) ** 2) ** 0.5)
            if has_odometry and s["stamp_ns"] in ego_yaws:
                odom_total += 1
                ov = preds[pi].get("odom_velocity")
                if ov is not None and s.get("odom_frame") is not None:
                    tv, yaw = gts[gi]["velocity"], ego_yaws[s["stamp_ns"]]
                    c, sn = math.cos(yaw), math.sin(yaw)
                    wx, wy = c * tv[0] - sn * tv[1], sn * tv[0] + c * tv[1]
                    odom_errors.append(((ov[0] - wx) ** 2 + (ov[1] - wy) ** 2) ** 0.5)
            tally = labels.setdefault(gts[gi]["class"], [0, 0])
            tally[0] += preds[pi]["label"] == gts[gi]["class"]
            tally[1] += 1
        gt_total += len(gts)
        misses += len(gts) - len(used_g)
        fps += len(preds) - len(used_p)
    mota = 1.0 - (misses + fps + switches) / gt_total if gt_total else float("nan")
    correct, matched = sum(c for c, _ in labels.values()), sum(n for _, n in labels.values())
    return {"mota": mota, "gt_objects": gt_total, "misses": misses, "false_positives": fps, "id_switches": switches,
            "label_accuracy": correct / matched if matched else float("nan"), "labels_matched": matched,
            "label_accuracy_per_class": {k: c / n for k, (c, n) in sorted(labels.items())},
            "ego_speed_error": motion_errors(ego_errors, ego_total),
            "ground_velocity_error": motion_errors(ground_errors, ground_total),
            "odom_velocity_error": motion_errors(odom_errors, odom_total)}


def evaluate(bag, out):
    frames, truth, ego_speeds, ego_yaws = load_truth(bag)
    events, sets = load_replay(out)
    detected, delays, false_alarms = score_events(truth, events)
    return {"events": detected, "delays_s": delays, "false_alarms": false_alarms,
            "tracking": score_tracking(frames, sets, ego_speeds, ego_yaws)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bag")
    ap.add_argument("replay")
    a = ap.parse_args()
    r = evaluate(a.bag, a.replay)
    json.dump({**r, "false_alarms": len(r["false_alarms"])}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
