use crate::{LogLevel, SeriesInfo, Snapshot};

/// What a rule can ask of its host. In wasm this is medic itself (`WasmHost`); natively it is
/// [`crate::testing::TestHost`]. Rules use it through [`crate::Ctx`].
pub trait Host {
    fn log(&mut self, level: LogLevel, message: &str);
    fn state_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn state_set(&mut self, key: &str, value: &[u8]);
    fn state_delete(&mut self, key: &str);
    /// Nanoseconds since the Unix epoch.
    fn now(&mut self) -> u64;
    fn last_value(&mut self, identifier: &str) -> Option<Snapshot>;
    fn series(&mut self, id: u32) -> Option<SeriesInfo>;
}

/// The host as seen from inside a wasm component: every call is a component import.
#[cfg(target_arch = "wasm32")]
pub struct WasmHost;

#[cfg(target_arch = "wasm32")]
impl WasmHost {
    /// Route panics into the host's log before the component traps, so the operator sees the
    /// rule's own message instead of a bare `unreachable` trap.
    pub fn install() -> Self {
        use std::sync::Once;
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::__bindings::medic::rules::host::log(
                    LogLevel::Error,
                    &format!("rule panicked: {info}"),
                );
            }))
        });
        WasmHost
    }
}

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn log(&mut self, level: LogLevel, message: &str) {
        crate::__bindings::medic::rules::host::log(level, message)
    }
    fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        crate::__bindings::medic::rules::host::state_get(key)
    }
    fn state_set(&mut self, key: &str, value: &[u8]) {
        crate::__bindings::medic::rules::host::state_set(key, value)
    }
    fn state_delete(&mut self, key: &str) {
        crate::__bindings::medic::rules::host::state_delete(key)
    }
    fn now(&mut self) -> u64 {
        crate::__bindings::medic::rules::host::now()
    }
    fn last_value(&mut self, identifier: &str) -> Option<Snapshot> {
        crate::__bindings::medic::rules::host::last_value(identifier)
    }
    fn series(&mut self, id: u32) -> Option<SeriesInfo> {
        crate::__bindings::medic::rules::host::series(id)
    }
}
