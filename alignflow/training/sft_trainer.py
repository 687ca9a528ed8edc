"""TRL's SFTTrainer with the two hooks alignflow needs: a curriculum order and a finite-loss guard."""

from __future__ import annotations

from trl import SFTTrainer

from alignflow.training.stability import check_finite


class AlignflowSFTTrainer(SFTTrainer):
    """`train_sampler` (e.g. a CurriculumSampler) replaces the random order; a NaN or infinite loss
    raises NonFiniteLoss inside the step, before any later checkpoint can be written."""

    def __init__(self, *args, train_sampler=None, **kwargs) -> None:  # noqa: ANN001
        self.curriculum_sampler = train_sampler
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001
        if self.curriculum_sampler is not None:
            return self.curriculum_sampler
        return super()._get_train_sampler(train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_finite(float(loss.detach()), self.state.global_step + 1, str(self.args.output_dir))
        return loss
