//! What people read: sizes, ages and borderless tables, shared by every text report. Paths
//! are written by [`crate::manifest::display_path`].

use comfy_table::{Table, presets};

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `created` (seconds since the epoch) was: `42 s ago`, `3 min ago`, `5 d ago`.
pub fn age(created: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(created);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// An age as people write it: `30d`, `12h`, `90m`, `45s`.
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number and a unit (30d, 12h, 90m, 45s)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d (30d, 12h)")),
    };
    n.checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// A borderless table whose first row is a header.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header);
    table
}

/// The first 12 hex digits of a hash, as keys are shown.
pub fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_take_the_largest_unit_below_them() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn ages_are_a_number_and_a_unit() {
        use std::time::Duration;
        assert_eq!(super::parse_age("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(super::parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert!(
            super::parse_age("30")
                .unwrap_err()
                .contains("unit is s, m, h or d")
        );
        assert!(
            super::parse_age("d")
                .unwrap_err()
                .contains("a number and a unit")
        );
        assert!(
            super::parse_age("99999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }
}
