//! Listings: plain rows for scripts (cells joined by one separator, as they always were),
//! and, on a terminal, a header line and aligned columns for people.

use super::{io, AdminError};
use std::io::Write;

pub struct Table {
    headers: &'static [&'static str],
    separator: &'static str,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose plain rows join cells with `separator` (`"\t"`, or `" "` for the
    /// listings that always used spaces).
    pub fn new(headers: &'static [&'static str], separator: &'static str) -> Table {
        Table { headers, separator, rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the rows; with `columns`, under a header line, each column as wide as its
    /// widest cell (the last one left ragged). An empty table prints no header.
    pub fn write(&self, out: &mut dyn Write, columns: bool) -> Result<(), AdminError> {
        if !columns {
            for row in &self.rows {
                writeln!(out, "{}", row.join(self.separator)).map_err(io)?;
            }
            return Ok(());
        }
        if self.rows.is_empty() {
            return Ok(());
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut widths = vec![0usize; self.headers.len()];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            writeln!(out, "{}", line.trim_end()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(table: &Table, columns: bool) -> String {
        let mut out = Vec::new();
        table.write(&mut out, columns).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_rows_for_scripts_and_aligned_columns_with_headers_for_people() {
        let mut t = Table::new(&["NAME", "STATE", "UID"], "\t");
        t.row(vec!["alice".into(), "enabled".into(), "20000".into()]);
        t.row(vec!["bo".into(), "disabled".into(), "-".into()]);
        assert_eq!(written(&t, false), "alice\tenabled\t20000\nbo\tdisabled\t-\n");
        assert_eq!(written(&t, true), "NAME   STATE     UID\nalice  enabled   20000\nbo     disabled  -\n");
        let empty = Table::new(&["NAME"], "\t");
        assert_eq!(written(&empty, true), "");
    }
}
