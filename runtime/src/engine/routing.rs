//! Which rules an ingested item goes to, written once for the dispatcher and `medic replay`:
//! the series table numbers a value list and computes its rates, each rule's [`Interest`] says
//! whether it wants the item, and each rule that wants it takes it by reference (into its
//! batch's columns).

use super::batch::Observation;
use super::bindings as wit;
use super::interest::Interest;
use super::series::{Now, Rejected, SeriesTable};
use crate::event::{Identifier, Ingested};

/// A rule as routing sees it: what it wants, and where what it wants goes.
pub trait Target {
    fn interest(&mut self) -> &mut Interest;
    fn take_values(&mut self, obs: &Observation);
    /// A notification or MQTT message (rare: a rule that wants one clones it).
    fn take_event(&mut self, event: &wit::Event);
}

impl<T: Target + ?Sized> Target for &mut T {
    fn interest(&mut self) -> &mut Interest {
        (**self).interest()
    }
    fn take_values(&mut self, obs: &Observation) {
        (**self).take_values(obs)
    }
    fn take_event(&mut self, event: &wit::Event) {
        (**self).take_event(event)
    }
}

/// A value list the series table refused: it reached no rule.
#[derive(Debug)]
pub struct Refused {
    pub why: Rejected,
    pub identifier: Box<Identifier>,
}

/// Give `item` to every target that wants it, observed at `now`.
pub fn route<T: Target>(
    series: &SeriesTable,
    item: Ingested,
    now: Now,
    targets: impl IntoIterator<Item = T>,
) -> Result<(), Refused> {
    match item {
        Ingested::Values(vl) => match series.observe(&vl, now) {
            Ok(observed) => {
                for mut target in targets {
                    if target.interest().wants_values(observed.slot, &observed.key) {
                        target.take_values(&observed.obs);
                    }
                }
            }
            Err(why) => {
                return Err(Refused {
                    why,
                    identifier: Box::new(vl.identifier),
                });
            }
        },
        Ingested::Notification(n) => {
            let key = n.identifier.to_string();
            let event = wit::Event::from(n);
            for mut target in targets {
                if target.interest().wants_notification(&key) {
                    target.take_event(&event);
                }
            }
        }
        Ingested::Mqtt(m) => {
            let topic = m.topic.clone();
            let event = wit::Event::from(m);
            for mut target in targets {
                if target.interest().wants_topic(&topic) {
                    target.take_event(&event);
                }
            }
        }
    }
    Ok(())
}
