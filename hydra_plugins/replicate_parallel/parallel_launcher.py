"""hydra/launcher=parallel (conf/hydra/launcher/parallel.yaml): Hydra's joblib launcher, with replicate's
handling of stop signals and of jobs that end early (replicate.parallel). Hydra finds launchers only in
the hydra_plugins package, so this class lives here; what it does is in replicate.parallel."""
from __future__ import annotations

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class ParallelLauncher(JoblibLauncher):
    """The joblib launcher whose workers stop at a step boundary on a stop signal, and whose command ends
    with one line and the jobs' exit status when some of them did not finish."""

    def launch(self, job_overrides, initial_job_idx):
        from replicate.parallel import forwarded_stops, jobs_outcome, stopped_at_once

        sweep_dir = str(self.config.hydra.sweep.dir)
        with forwarded_stops() as stops, stopped_at_once(sweep_dir):
            returns = super().launch(job_overrides, initial_job_idx)
        jobs_outcome(returns, stops.signal_number, sweep_dir=sweep_dir)
        return returns
