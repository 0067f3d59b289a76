"""`python -m harness.zoo`: build the embedded suites (config: conf/zoo/build.yaml)."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.common.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR / "zoo"), config_name="build")
def main(cfg: DictConfig) -> None:
    from harness.zoo import ZooError, build  # torch/transformers after Hydra has parsed --help

    try:
        done = build(cfg)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for r in done:
        if r["status"] == "skipped":  # `until` set: an earlier partial build already went that far
            took = f" (built up to step {r['until']} already)" if "until" in r else " (same recipe hash)"
        else:
            took = f" in {r['seconds']:.0f}s"
        if r["status"] == "partial":
            took += f", up to step {r['until']} (no main: run without until= to finish)"
        if r.get("resumed_from") is not None:
            took += f" (resumed from step {r['resumed_from']})"
        print(f"{r['repo'].split('/')[-1]}: {r['status']}{took}, recipe {r['recipe_hash']} -> {cfg.cache_dir}")
        live = r.get("live")
        if live:
            train = r["seconds"] - live["seconds"]
            share = f" (+{100 * live['seconds'] / train:.1f}% on the training's {train:.0f}s)" if train > 0 else ""
            print(f"  live: {live['probes']} of {len(live['steps'])} scheduled steps probed in {live['seconds']:.1f}s"
                  f"{share} -> {live['results']}")
            for line in live["summary"]:
                print(f"  {line}")
            if live["plot"]:
                print(f"  plot: {live['plot']}")
            if live["wandb"]:
                print(f"  W&B run: {live['wandb']}")


if __name__ == "__main__":
    main()
