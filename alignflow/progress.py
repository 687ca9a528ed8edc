"""Progress a person can watch: a tqdm bar with rate, ETA and the latest metrics."""

from __future__ import annotations

from tqdm.auto import tqdm


class StepProgress:
    """Progress over `total` steps, updated to an absolute step with a few named values."""

    def __init__(self, description: str, total: int) -> None:
        self._bar = tqdm(total=total, desc=description, unit="step", dynamic_ncols=True, mininterval=1.0)

    def update(self, step: int, **values: float) -> None:
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
