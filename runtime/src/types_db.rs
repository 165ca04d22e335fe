//! collectd's types.db (read by `collectd_codec`), with the types medic reports itself.

use collectd_codec::DsType;
pub use collectd_codec::types_db::{DataSource, TypesDb};

/// The type of a probe's value list (`<node>/probe-<name>/probe`): whether the check passed,
/// its exit code (NaN when it had none: killed, timed out, not started) and how long it took.
pub const PROBE_TYPE: &str = "probe";

/// The `types_db` files as collectd reads them, plus medic's own types (a file's definition of
/// the same name wins).
pub fn load(paths: &[impl AsRef<std::path::Path>]) -> TypesDb {
    let mut db = TypesDb::load(paths);
    let gauge = |name: &str| DataSource {
        name: name.into(),
        ds_type: DsType::Gauge,
    };
    db.define_builtin(
        PROBE_TYPE,
        ["ok", "code", "seconds"].into_iter().map(gauge).collect(),
    );
    db
}
