"""`hydra/launcher=basic` in aesweep: Hydra's basic launcher, except that a job Hydra cannot
even start (writing its .hydra/ config or its log fails: a full disk, a quota) stops the
sweep with one line instead of a traceback. The multirun then ends as usual, so the finished
jobs' report is written (where there is room) and the command says how to resume.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins import basic_launcher
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict


class BasicLauncher(basic_launcher.BasicLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Hydra 1.3's BasicLauncher.launch, with the failed start caught."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        basic_launcher.log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            basic_launcher.log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            loader = self.hydra_context.config_loader
            job_cfg = loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = job_cfg.hydra.job.num = idx
            try:
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=self.task_function,
                        config=job_cfg,
                        job_dir_key="hydra.sweep.dir",
                        job_subdir_key="hydra.sweep.subdir",
                    )
                )
            except OSError as e:  # before the job ran: it records nothing itself
                job = job_cfg.hydra.sweep.subdir
                print(f"aesweep: error: job {job} could not start: {e}", file=sys.stderr)
                return runs
            finally:
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs
