//! Test-only rule that misbehaves on purpose, chosen by config `mode`:
//! `trap` panics on every batch, `loop` never returns, `init-error` refuses its config,
//! `grow` allocates until the memory cap stops it, `print` prints a line per batch, `flood`
//! prints 1 000 lines per batch to stderr.

use medic_rules::{Batch, Config, Ctx, Rule, Subscriptions, export_rule};

pub struct Faulty {
    mode: String,
}

impl Rule for Faulty {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Settings {
            mode: String,
        }
        let s: Settings = config.parse()?;
        if s.mode == "init-error" {
            return Err("faulty rule refuses to start (mode init-error)".into());
        }
        Ok(Self { mode: s.mode })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values("**")
    }

    fn on_batch(&mut self, batch: &Batch, _ctx: &mut Ctx) {
        match self.mode.as_str() {
            "trap" => panic!("faulty rule trapped on a batch of {}", batch.events.len()),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                // Reserve without touching: the memory cap, not the deadline, must stop it.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "print" => println!("faulty prints a batch of {}", batch.events.len()),
            "flood" => {
                for i in 0..1000 {
                    eprintln!("flood line {i}");
                }
            }
            _ => {}
        }
    }
}

export_rule!(Faulty);
