"""The paper's recipe: reduce on plateau, early stopping and the best checkpoint.

The loop calls `Recipe.after_evaluation` once per evaluation and asks
`Recipe.stopped` and `Recipe.state_for_test`; everything else about the
recipe (what is monitored, when it improves, what is kept) stays here and in
schedules.py, which keeps its state inside the optimiser state so that it is
checkpointed and resumed with the parameters.
"""

from typing import Any, Optional

from absl import logging

from sharp_unet_jax.training import checkpointing, schedules


class Recipe:
  """Consults the monitored validation metric after each evaluation."""

  def __init__(self, trainer, workdir: str):
    """Opens WORKDIR/checkpoints_best when the config keeps the best state.

    Args:
      trainer: the `train.Trainer` of the run (its config and `observe`).
      workdir: the run's folder.
    """
    self.trainer = trainer
    self.config = trainer.config
    self.best: Optional[Any] = None
    if schedules.keeps_best(self.config):
      self.best = checkpointing.create_manager(workdir, 1, name=checkpointing.BEST)

  def stopped(self, state) -> bool:
    """Whether early stopping has already ended the run (e.g. before a resume)."""
    return schedules.should_stop(state.opt_state, self.config)

  def after_evaluation(self, state, values: dict, step: int):
    """Feeds one evaluation to plateau, early stopping and the best checkpoint.

    Args:
      state: the train state after `step` steps.
      values: the evaluation's metrics, with config.monitor_metric.
      step: the steps done.

    Returns:
      (state, stop): the state with updated monitors; whether to stop now.
    """
    config = self.config
    if not schedules.uses_monitor(config):
      return state, False
    value = values[config.monitor_metric]
    state, improved = self.trainer.observe(state, value, step)
    # A replay after a crash may reach a step saved before: then it is skipped.
    if improved and self.best is not None and step not in self.best.all_steps():
      checkpointing.save(self.best, step, state, force=True)
    stop = self.stopped(state)
    logging.info(
      'step %d: %s=%.5f (%s), learning rate %.3g%s',
      step,
      config.monitor_metric,
      value,
      'best so far' if improved else 'no improvement',
      schedules.current_learning_rate(config, state.opt_state, step),
      '; early stopping' if stop else '',
    )
    return state, stop

  def state_for_test(self, state):
    """The best state after early stopping, else `state` itself."""
    if not self.config.get('early_stopping') or self.best is None:
      return state
    if self.best.latest_step() is None:
      return state
    self.best.wait_until_finished()
    state = checkpointing.restore(self.best, state)
    logging.info('Restored the best state (step %d) for the test.', int(state.step))
    return state

  def close(self) -> None:
    """Closes the best-checkpoint manager, if any."""
    if self.best is not None:
      self.best.close()
