//! How training looks on a terminal: a progress bar per run (or one line per epoch when
//! there is no terminal or `--no-progress`), drawn from the trainer's events.

use indicatif::{ProgressBar, ProgressStyle};
use tpsnet_training::trainer::TrainEvent;

/// Shows [`TrainEvent`]s on stderr.
pub struct Console {
    progress: bool,
    /// The bar of the run being trained, and its name.
    bar: Option<(String, ProgressBar)>,
}

impl Console {
    /// With `progress`, a bar; without, one line per epoch.
    pub fn new(progress: bool) -> Self {
        Console {
            progress,
            bar: None,
        }
    }

    pub fn show(&mut self, event: TrainEvent) {
        match event {
            TrainEvent::EpochStart {
                name,
                epoch,
                epochs,
                steps,
            } => {
                if self.progress && self.bar.as_ref().is_none_or(|(n, _)| n != name) {
                    self.finish();
                    let bar = ProgressBar::new(u64::from(epochs) * steps);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta} | {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(name.to_string());
                    bar.set_position(u64::from(epoch - 1) * steps);
                    bar.reset_eta();
                    self.bar = Some((name.to_string(), bar));
                }
            }
            TrainEvent::Steps {
                epoch,
                epochs,
                step,
                steps,
                loss,
                acc,
                images_per_s,
                lr,
                ..
            } => {
                if let Some((_, bar)) = &self.bar {
                    bar.set_position(u64::from(epoch - 1) * steps + step);
                    bar.set_message(format!(
                        "epoch {epoch}/{epochs} loss {loss:.4} acc {acc:.2}% {images_per_s:.0} img/s lr {lr:.4}"
                    ));
                }
            }
            TrainEvent::Epoch {
                name,
                epochs,
                metrics: m,
            } => match &self.bar {
                Some((_, bar)) => bar.println(format!(
                    "{name} epoch {:>3}/{epochs}: train loss {:.4} acc {:.2}%{}{} | {:.1}s, {:.0} img/s",
                    m.epoch,
                    m.train_loss,
                    m.train_acc,
                    m.val_acc
                        .map(|a| format!(" | val acc {a:.2}%"))
                        .unwrap_or_default(),
                    m.test_acc
                        .map(|a| format!(" | test acc {a:.2}%"))
                        .unwrap_or_default(),
                    m.train_time_s,
                    m.images_per_s
                )),
                None => eprintln!(
                    "{name} epoch {}/{epochs}: loss {:.4} acc {:.2}% {:.0} img/s",
                    m.epoch, m.train_loss, m.train_acc, m.images_per_s
                ),
            },
            TrainEvent::Warning { name, message } => match &self.bar {
                Some((_, bar)) => bar.println(format!("warning: {name}: {message}")),
                None => eprintln!("warning: {name}: {message}"),
            },
        }
    }

    /// Clears the bar of a run that ended normally. (A bar dropped after an error stays
    /// on screen where it stopped.)
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
