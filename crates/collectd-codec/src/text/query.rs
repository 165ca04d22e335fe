//! collectd's query commands on the unixsock socket — `GETVAL`, `LISTVAL`, `FLUSH` — answered
//! from the caller's latest values ([`LatestValues`]) with collectd 5.12's replies, byte for
//! byte, so `collectdctl` and `collectd-nagios` work against a program that serves them as
//! against collectd (formats and messages from collectd's
//! `src/utils/cmds/{getval,listval,flush}.c`).

use crate::Identifier;
use crate::types_db::TypesDb;

/// The latest value of every live series, as collectd's cache keeps it: what `GETVAL` and
/// `LISTVAL` answer from.
pub trait LatestValues: Send + Sync {
    /// Each data source's name and value for the series named `identifier` exactly
    /// (`host/plugin[-inst]/type[-inst]`): a gauge as it is, a counter, derive or absolute as
    /// its per-second rate (NaN until there is one). `None` when there is no such series.
    fn getval(&self, identifier: &str) -> Option<Vec<(String, f64)>>;
    /// Every series with the time of its latest value, sorted by identifier.
    fn listval(&self) -> Vec<(u64, String)>;
}

/// A query line, parsed.
#[derive(Debug, PartialEq)]
pub enum Query {
    /// The identifier as given: collectd looks it up as a string, exactly.
    GetVal {
        identifier: String,
        type_: String,
    },
    ListVal,
    /// How many (plugin, identifier) flushes were asked for.
    Flush {
        requests: usize,
    },
}

/// A query command's arguments, or the error after `-1 `. `None`: not a query command.
pub fn parse(command: &str, args: &[String]) -> Option<Result<Query, String>> {
    Some(match command.to_ascii_uppercase().as_str() {
        "GETVAL" => getval(args),
        "LISTVAL" => match args.first() {
            Some(extra) => Err(format!("Garbage after end of command: `{extra}'.")),
            None => Ok(Query::ListVal),
        },
        "FLUSH" => flush(args),
        _ => return None,
    })
}

fn getval(args: &[String]) -> Result<Query, String> {
    let identifier = match args {
        [] => return Err("Missing identifier.".into()),
        [one] => one,
        [_, extra, ..] => return Err(format!("Garbage after identifier: `{extra}'.")),
    };
    let parsed = Identifier::parse(identifier)
        .ok_or_else(|| format!("Cannot parse identifier `{identifier}'."))?;
    Ok(Query::GetVal {
        identifier: identifier.clone(),
        type_: parsed.type_,
    })
}

fn flush(args: &[String]) -> Result<Query, String> {
    let (mut plugins, mut identifiers) = (0usize, 0usize);
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("Invalid option string `{arg}'."))?;
        match key.to_ascii_lowercase().as_str() {
            "plugin" => plugins += 1,
            "identifier" => {
                Identifier::parse(value).ok_or_else(|| format!("Invalid identifier `{value}'."))?;
                identifiers += 1;
            }
            "timeout" => {
                // strtod's reading: a number (`inf` and `nan` are numbers, but not finite).
                let ok = value.trim().parse::<f64>().is_ok_and(f64::is_finite);
                if !ok {
                    return Err(format!("Invalid value for option `timeout': {value}"));
                }
            }
            _ => return Err(format!("Cannot parse option `{key}'.")),
        }
    }
    Ok(Query::Flush {
        requests: plugins.max(1) * identifiers.max(1),
    })
}

/// The whole reply to `query`, every line ending in `\n`.
pub fn answer(query: &Query, types: &TypesDb, latest: &dyn LatestValues) -> String {
    match query {
        Query::GetVal { identifier, type_ } => {
            let Some(values) = latest.getval(identifier) else {
                // collectd checks the type first; medic also knows series of types outside
                // types.db (it accepts them), so only an unknown type *and* series is refused so.
                if types.get(type_).is_none() {
                    // collectd's message carries its own `\n` before the reply's: an empty line
                    // follows, which clients skip.
                    return format!("-1 Type `{type_}' is unknown.\n\n");
                }
                return "-1 No such value.\n".into();
            };
            let mut out = found(values.len());
            for (name, value) in values {
                out.push_str(&name);
                out.push('=');
                out.push_str(&c_exponent(value));
                out.push('\n');
            }
            out
        }
        Query::ListVal => {
            let all = latest.listval();
            let mut out = found(all.len());
            for (time, identifier) in all {
                out.push_str(&format!("{:.3} {identifier}\n", time as f64 / 1e9));
            }
            out
        }
        // medic buffers nothing for writing (it keeps only the latest value of each series), so
        // each flush asked for is done at once, as collectd answers when no plugin holds data.
        Query::Flush { requests } => format!("0 Done: {requests} successful, 0 errors\n"),
    }
}

fn found(n: usize) -> String {
    format!("{n} Value{} found\n", if n == 1 { "" } else { "s" })
}

/// C's `%12e` (and collectd's `NaN` for not-a-number): `2.870117e+00`, right-aligned in 12.
fn c_exponent(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return format!("{:>12}", if v > 0.0 { "inf" } else { "-inf" });
    }
    let rust = format!("{v:.6e}");
    let (mantissa, exponent) = rust.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("a decimal exponent");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{:>12}", format!("{mantissa}e{sign}{:02}", exponent.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(time, identifier, data sources)` per series.
    type Series = (u64, String, Vec<(String, f64)>);

    struct Table(Vec<Series>);

    impl LatestValues for Table {
        fn getval(&self, identifier: &str) -> Option<Vec<(String, f64)>> {
            self.0
                .iter()
                .find(|(_, id, _)| id == identifier)
                .map(|(_, _, v)| v.clone())
        }

        fn listval(&self) -> Vec<(u64, String)> {
            self.0.iter().map(|(t, id, _)| (*t, id.clone())).collect()
        }
    }

    fn types() -> TypesDb {
        let mut db = TypesDb::default();
        db.add("load shortterm:GAUGE:0:5000, midterm:GAUGE:0:5000, longterm:GAUGE:0:5000\n");
        db.add("gauge value:GAUGE:U:U\n");
        db
    }

    fn ask(line: &[&str], table: &Table) -> String {
        let args: Vec<String> = line[1..].iter().map(|s| s.to_string()).collect();
        match parse(line[0], &args).expect("a query") {
            Ok(q) => answer(&q, &types(), table),
            Err(e) => format!("-1 {e}\n"),
        }
    }

    /// The replies in `tests/fixtures/collectd/unixsock-transcript.txt`, from collectd 5.12.
    #[test]
    fn replies_match_collectd_byte_for_byte() {
        let load = vec![
            ("shortterm".to_string(), 2.870117),
            ("midterm".to_string(), 1.17041),
            ("longterm".to_string(), 0.4536133),
        ];
        let table = Table(vec![
            (1_795_313_834_428_000_000, "h/load/load".into(), load),
            (
                1_179_574_454_000_000_000,
                "h/test-plugin/gauge-t3".into(),
                vec![("value".into(), f64::NAN)],
            ),
        ]);
        assert_eq!(
            ask(&["GETVAL", "h/load/load"], &table),
            "3 Values found\nshortterm=2.870117e+00\nmidterm=1.170410e+00\n\
             longterm=4.536133e-01\n"
        );
        assert_eq!(
            ask(&["getval", "h/test-plugin/gauge-t3"], &table),
            "1 Value found\nvalue=NaN\n"
        );
        assert_eq!(
            ask(&["GETVAL", "h/nosuch/load"], &table),
            "-1 No such value.\n"
        );
        assert_eq!(
            ask(&["GETVAL", "h/load/nosuchtype"], &table),
            "-1 Type `nosuchtype' is unknown.\n\n"
        );
        assert_eq!(
            ask(&["GETVAL", "h/load"], &table),
            "-1 Cannot parse identifier `h/load'.\n"
        );
        assert_eq!(
            ask(&["GETVAL", "h/load/load", "extra"], &table),
            "-1 Garbage after identifier: `extra'.\n"
        );
        assert_eq!(
            ask(&["LISTVAL"], &table),
            "2 Values found\n1795313834.428 h/load/load\n1179574454.000 h/test-plugin/gauge-t3\n"
        );
        assert_eq!(ask(&["FLUSH"], &table), "0 Done: 1 successful, 0 errors\n");
        assert_eq!(
            ask(&["FLUSH", "plugin=network"], &table),
            "0 Done: 1 successful, 0 errors\n"
        );
        assert_eq!(
            ask(&["FLUSH", "timeout=abc"], &table),
            "-1 Invalid value for option `timeout': abc\n"
        );
        assert_eq!(
            ask(
                &["FLUSH", "identifier=h/load/load", "plugin=network"],
                &table
            ),
            "0 Done: 1 successful, 0 errors\n"
        );
        assert_eq!(
            ask(&["FLUSH", "plugin=a", "plugin=b"], &table),
            "0 Done: 2 successful, 0 errors\n"
        );
        assert_eq!(
            ask(&["FLUSH", "nonsense"], &table),
            "-1 Invalid option string `nonsense'.\n"
        );
    }

    #[test]
    fn numbers_print_as_c_prints_them() {
        for (v, c) in [
            (0.0, "0.000000e+00"),
            (1.5, "1.500000e+00"),
            (-1.5, "-1.500000e+00"),
            (2.139702e10, "2.139702e+10"),
            (1e-300, "1.000000e-300"),
            (f64::INFINITY, "         inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(c_exponent(v), c, "{v}");
        }
    }
}
