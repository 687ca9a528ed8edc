"""Progress a person can watch: a tqdm bar with rate, ETA and the latest metrics."""

from __future__ import annotations

from tqdm.auto import tqdm


class StepProgress:
    """Progress over `total` units (training steps, prompts, documents), moved to an absolute
    position (`update`) or forward (`advance`), with a few named values beside the bar."""

    def __init__(self, description: str, total: int, unit: str = "step") -> None:
        from alignflow.distributed import is_main_process

        # In a launched job only the main process draws: N bars of the same training are noise.
        self._bar = tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, mininterval=1.0,
                         disable=not is_main_process())

    def update(self, step: int, **values: float) -> None:
        self._bar.update(step - self._bar.n)
        self._show(values)

    def advance(self, count: int = 1, **values: float) -> None:
        self._bar.update(count)
        self._show(values)

    def _show(self, values: dict[str, float]) -> None:
        if values:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def close_open_bars() -> None:
    """End every bar still drawn: a stage that fails mid-loop leaves its bar open, and the error
    line printed next would otherwise continue the bar's line."""
    from tqdm import tqdm as base

    for bar in list(getattr(base, "_instances", ())):
        bar.close()
