//! Prediction output for people and programs: an aligned table, JSON lines, CSV.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::classify::{ClassScore, Prediction};

/// How `tpsnet-infer` prints predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    file: String,
    index: usize,
    class: &'a str,
    probability: f32,
    top_k: &'a [ClassScore],
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes predictions one at a time in a chosen format.
#[derive(Debug)]
pub struct PredictionWriter<W: Write> {
    out: W,
    format: OutputFormat,
    wrote_header: bool,
}

impl<W: Write> PredictionWriter<W> {
    /// A writer of predictions to `out` in `format`.
    pub fn new(out: W, format: OutputFormat) -> Self {
        PredictionWriter {
            out,
            format,
            wrote_header: false,
        }
    }

    /// Writes one file's prediction.
    pub fn write(&mut self, file: &Path, p: &Prediction) -> io::Result<()> {
        let file_s = file.display().to_string();
        match self.format {
            OutputFormat::Table => {
                if !self.wrote_header {
                    writeln!(
                        self.out,
                        "{:<12} {:>7}  {:<40}  FILE",
                        "CLASS", "PROB", "TOP-K"
                    )?;
                    self.wrote_header = true;
                }
                let topk = p
                    .top_k
                    .iter()
                    .map(|s| format!("{} {:.1}%", s.class, 100.0 * s.probability))
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(
                    self.out,
                    "{:<12} {:>6.2}%  {:<40}  {}",
                    p.class,
                    100.0 * p.probability,
                    topk,
                    file_s
                )
            }
            OutputFormat::Jsonl => {
                let row = JsonRow {
                    file: file_s,
                    index: p.index,
                    class: &p.class,
                    probability: p.probability,
                    top_k: &p.top_k,
                };
                let line = serde_json::to_string(&row).map_err(io::Error::other)?;
                writeln!(self.out, "{line}")
            }
            OutputFormat::Csv => {
                if !self.wrote_header {
                    writeln!(self.out, "file,class,index,probability,top_k")?;
                    self.wrote_header = true;
                }
                let topk = p
                    .top_k
                    .iter()
                    .map(|s| format!("{}:{:.6}", s.class, s.probability))
                    .collect::<Vec<_>>()
                    .join(";");
                writeln!(
                    self.out,
                    "{},{},{},{:.6},{}",
                    csv_field(&file_s),
                    csv_field(&p.class),
                    p.index,
                    p.probability,
                    csv_field(&topk)
                )
            }
        }
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred() -> Prediction {
        let top = vec![
            ClassScore {
                index: 3,
                class: "cat".into(),
                probability: 0.75,
            },
            ClassScore {
                index: 5,
                class: "dog".into(),
                probability: 0.25,
            },
        ];
        Prediction {
            index: 3,
            class: "cat".into(),
            probability: 0.75,
            top_k: top,
        }
    }

    fn render(format: OutputFormat, file: &str) -> String {
        let mut buf = Vec::new();
        {
            let mut w = PredictionWriter::new(&mut buf, format);
            w.write(Path::new(file), &pred()).unwrap();
            w.write(Path::new(file), &pred()).unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn formats() {
        let t = render(OutputFormat::Table, "a.png");
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().nth(1).unwrap().contains("cat"));
        assert!(t.contains("75.00%"));

        let j = render(OutputFormat::Jsonl, "a.png");
        let v: serde_json::Value = serde_json::from_str(j.lines().next().unwrap()).unwrap();
        assert_eq!(v["class"], "cat");
        assert_eq!(v["top_k"][1]["class"], "dog");
        assert_eq!(v["file"], "a.png");

        let c = render(OutputFormat::Csv, "we,ird\"name.png");
        let mut lines = c.lines();
        assert_eq!(lines.next().unwrap(), "file,class,index,probability,top_k");
        assert_eq!(
            lines.next().unwrap(),
            "\"we,ird\"\"name.png\",cat,3,0.750000,cat:0.750000;dog:0.250000"
        );
        assert_eq!(c.lines().count(), 3);
    }
}
