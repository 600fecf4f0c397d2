//! The row path: a stream's mapping, sanitising and validation run over column-shaped
//! rows ([`RowBatch`]) without making a record per row.
//!
//! A [`RowProgram`] is compiled once per stream and set of source columns. The mapping
//! becomes work on value slots — renames and drops only move names, so they cost nothing
//! per row — and each row is read into the slots as borrowed cells, mapped, cleaned and
//! checked, then written as text into one output batch. The result is exactly what the
//! record path makes of the same rows (the same values, field order, failures and
//! messages; the tests compare both): each value must keep its output column's kind, and
//! a batch where one would not (a text default in a number column, say) is left to the
//! record path whole.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::mapping::{CastType, MapStep, Piece, StepRef};
use super::pipeline::StreamPlan;
use super::validation::{FieldValue, ValueType};
use crate::record::Record;
use crate::rows::{Cell, Column, ColumnKind, RowBatch};
use crate::state::FailureStage;

/// A value on the row path: a cell read as its kind, or what a step made of it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite.
    Num(f64),
    Text(Cow<'a, str>),
}

impl<'a> Val<'a> {
    fn from_cell(cell: Cell<'a>) -> Self {
        match cell {
            Cell::Null => Val::Null,
            Cell::Bool(b) => Val::Bool(b),
            Cell::Integer(i) => Val::Int(i),
            Cell::Number(f) => Val::Num(f),
            Cell::Text(t) => Val::Text(Cow::Borrowed(t)),
        }
    }

    /// A JSON value as a row value; `None` for what a cell cannot hold (objects,
    /// arrays, integers past `i64`).
    fn from_json(value: &Value) -> Option<Val<'static>> {
        Some(match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) if n.is_f64() => Val::Num(n.as_f64().filter(|f| f.is_finite())?),
            Value::Number(n) => Val::Int(n.as_i64()?),
            Value::String(s) => Val::Text(Cow::Owned(s.clone())),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// The same value, borrowing its text from `self`.
    fn reborrow(&self) -> Val<'_> {
        match self {
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(*b),
            Val::Int(i) => Val::Int(*i),
            Val::Num(f) => Val::Num(*f),
            Val::Text(t) => Val::Text(Cow::Borrowed(t.as_ref())),
        }
    }

    /// The column kind that holds this value; `None` for null (any kind holds it).
    fn kind(&self) -> Option<ColumnKind> {
        match self {
            Val::Null => None,
            Val::Bool(_) => Some(ColumnKind::Boolean),
            Val::Int(_) => Some(ColumnKind::Integer),
            Val::Num(_) => Some(ColumnKind::Number),
            Val::Text(_) => Some(ColumnKind::Text),
        }
    }

    /// The value's JSON text, as `Value::to_string` writes it.
    fn write_json_text(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Num(_) | Val::Text(_) => out.push_str(&self.to_json().to_string()),
        }
    }

    /// Append the value as a cell of a column of `kind`; `false` when the cell would not
    /// read back as this value (or the batch is full).
    fn write_cell(&self, kind: ColumnKind, out: &mut RowBatch) -> bool {
        match (self, kind) {
            (Val::Null, _) => out.push_null_cell(),
            (Val::Bool(b), ColumnKind::Boolean) => {
                out.push_text_cell(|t| t.push_str(if *b { "true" } else { "false" }))
            }
            (Val::Int(i), ColumnKind::Integer) => out.push_text_cell(|t| {
                let _ = write!(t, "{i}");
            }),
            // `Display` writes the shortest text that reads back as the same float.
            (Val::Num(f), ColumnKind::Number) => out.push_text_cell(|t| {
                let _ = write!(t, "{f}");
            }),
            (Val::Text(s), kind) if matches!(kind.read(s), Cell::Text(_)) => {
                out.push_text_cell(|t| t.push_str(s))
            }
            _ => false,
        }
    }
}

impl FieldValue for Val<'_> {
    fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Text(t) => Some(t),
            _ => None,
        }
    }

    fn is_type(&self, t: ValueType) -> bool {
        matches!(
            (self, t),
            (Val::Text(_), ValueType::String)
                | (Val::Int(_), ValueType::Integer | ValueType::Number)
                | (Val::Num(_), ValueType::Number)
                | (Val::Bool(_), ValueType::Boolean)
        )
    }

    fn length(&self) -> Option<usize> {
        match self {
            Val::Text(t) => Some(t.chars().count()),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Num(f) => Some(*f),
            _ => None,
        }
    }

    fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Val::Null, Value::Null) => true,
            (Val::Bool(a), Value::Bool(b)) => a == b,
            (Val::Int(i), Value::Number(n)) => !n.is_f64() && n.as_i64() == Some(*i),
            (Val::Num(f), Value::Number(n)) => n.is_f64() && n.as_f64() == Some(*f),
            (Val::Text(a), Value::String(b)) => a == b,
            _ => false,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Num(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Text(t) => Value::String(t.as_ref().to_owned()),
        }
    }
}

/// `value` cast as [`cast`](super::mapping::cast) casts its JSON value: the same results
/// and the same messages (a test holds the two together).
pub(crate) fn cast_val(value: Val<'_>, to: CastType) -> Result<Val<'_>, String> {
    let shown = |v: &Val<'_>| v.to_json().to_string();
    match to {
        CastType::String => Ok(match value {
            Val::Text(_) => value,
            other => {
                let mut text = String::new();
                other.write_json_text(&mut text);
                Val::Text(Cow::Owned(text))
            }
        }),
        CastType::Integer => match value {
            Val::Int(_) => Ok(value),
            Val::Num(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Val::Int(f as i64)),
            Val::Text(ref t) => t
                .trim()
                .parse::<i64>()
                .map(Val::Int)
                .map_err(|_| format!("{} is not a whole number", shown(&value))),
            Val::Bool(b) => Ok(Val::Int(i64::from(b))),
            other => Err(format!("{} is not a whole number", shown(&other))),
        },
        CastType::Number => match value {
            Val::Int(_) | Val::Num(_) => Ok(value),
            Val::Text(ref t) => t
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Val::Num)
                .ok_or_else(|| format!("{} is not a number", shown(&value))),
            other => Err(format!("{} is not a number", shown(&other))),
        },
        CastType::Boolean => match value {
            Val::Bool(_) => Ok(value),
            Val::Int(0) => Ok(Val::Bool(false)),
            Val::Int(1) => Ok(Val::Bool(true)),
            Val::Text(ref t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Val::Bool(true)),
                "false" | "0" | "no" => Ok(Val::Bool(false)),
                _ => Err(format!("{} is not a boolean", shown(&value))),
            },
            other => Err(format!("{} is not a boolean", shown(&other))),
        },
    }
}

/// One mapping step's work on a row's slots.
#[derive(Debug)]
enum Op {
    /// Cast the slot (a null stays null); a failure names `field`.
    Cast {
        slot: usize,
        to: CastType,
        field: String,
    },
    /// Set the slot to `value` when it is null.
    Default { slot: usize, value: Val<'static> },
    /// Set the slot to `value`.
    Set { slot: usize, value: Val<'static> },
    /// Set the slot to the template's text.
    Template {
        slot: usize,
        pieces: Vec<TemplatePiece>,
    },
}

#[derive(Debug)]
enum TemplatePiece {
    Text(String),
    /// A field's value as text (nothing for null).
    Slot(usize),
}

/// A stream's transform compiled for one set of source columns.
#[derive(Debug)]
pub(crate) struct RowProgram {
    /// Value slots per row: the source's cells first, then what steps add.
    slots: usize,
    ops: Vec<Op>,
    /// Per output column, its slot.
    out: Vec<usize>,
    columns: Arc<[Column]>,
    /// The output is the input, value for value.
    identity: bool,
    /// The field each rule reads, and its slot (`None`: missing from the output).
    rule_slots: Vec<(String, Option<usize>)>,
}

/// A batch through the row path.
pub(crate) struct RowsDone {
    /// The rows that passed, transformed; `None` when they are the source's batch as
    /// it is.
    pub(crate) rows: Option<RowBatch>,
    /// Per row passed, its row in the source batch.
    pub(crate) from: Vec<usize>,
    /// Whether the rows passed differ from the source's (their originals are kept for
    /// dead letters).
    pub(crate) changed: bool,
    /// Rows that failed mapping or validation: the source's row, stage, reason.
    pub(crate) rejected: Vec<(Record, FailureStage, String)>,
}

impl RowProgram {
    /// `plan`'s transform for rows of `input`; `None` when the row path cannot hold it
    /// (two columns share a name, or a step sets a value a cell cannot hold).
    pub(crate) fn compile(plan: &StreamPlan, input: &Arc<[Column]>) -> Option<RowProgram> {
        let unique = input
            .iter()
            .enumerate()
            .all(|(i, c)| input[..i].iter().all(|o| o.name != c.name));
        if !unique {
            return None;
        }
        // The record's fields in the order its map keeps them, each with its slot.
        let mut fields: Vec<(String, usize)> = input
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut kinds: Vec<ColumnKind> = input.iter().map(|c| c.kind).collect();
        let mut ops = Vec::new();
        let find = |fields: &[(String, usize)], name: &str| fields.iter().position(|f| f.0 == name);
        // As the map's insert: in place when present, else last.
        let set = |fields: &mut Vec<(String, usize)>, name: &str, slot: usize| match fields
            .iter_mut()
            .find(|f| f.0 == name)
        {
            Some(f) => f.1 = slot,
            None => fields.push((name.to_owned(), slot)),
        };
        let new_slot = |kinds: &mut Vec<ColumnKind>, kind: ColumnKind| {
            kinds.push(kind);
            kinds.len() - 1
        };
        for step in plan.mapping.steps() {
            match step {
                StepRef::Step(MapStep::Rename { from, to }) => {
                    // As the map's remove (a swap remove), then insert.
                    if let Some(at) = find(&fields, from) {
                        let (_, slot) = fields.swap_remove(at);
                        set(&mut fields, to, slot);
                    }
                }
                StepRef::Step(MapStep::Cast { field, to }) => {
                    if let Some(at) = find(&fields, field) {
                        let slot = fields[at].1;
                        kinds[slot] = match to {
                            CastType::String => ColumnKind::Text,
                            CastType::Integer => ColumnKind::Integer,
                            CastType::Number => ColumnKind::Number,
                            CastType::Boolean => ColumnKind::Boolean,
                        };
                        ops.push(Op::Cast {
                            slot,
                            to: *to,
                            field: field.clone(),
                        });
                    }
                }
                StepRef::Step(MapStep::Default { field, value }) => {
                    let value = Val::from_json(value)?;
                    match find(&fields, field) {
                        Some(at) => ops.push(Op::Default {
                            slot: fields[at].1,
                            value,
                        }),
                        None => {
                            let slot =
                                new_slot(&mut kinds, value.kind().unwrap_or(ColumnKind::Text));
                            ops.push(Op::Set { slot, value });
                            set(&mut fields, field, slot);
                        }
                    }
                }
                StepRef::Step(MapStep::Drop { field }) => {
                    if let Some(at) = find(&fields, field) {
                        fields.swap_remove(at);
                    }
                }
                StepRef::Step(MapStep::Constant { field, value }) => {
                    let value = Val::from_json(value)?;
                    let slot = new_slot(&mut kinds, value.kind().unwrap_or(ColumnKind::Text));
                    ops.push(Op::Set { slot, value });
                    set(&mut fields, field, slot);
                }
                StepRef::Computed { field, pieces } => {
                    let pieces = pieces
                        .iter()
                        .filter_map(|p| match p {
                            Piece::Text(t) => Some(TemplatePiece::Text(t.clone())),
                            // A missing field adds nothing.
                            Piece::Field(name) => {
                                find(&fields, name).map(|at| TemplatePiece::Slot(fields[at].1))
                            }
                        })
                        .collect();
                    let slot = new_slot(&mut kinds, ColumnKind::Text);
                    ops.push(Op::Template { slot, pieces });
                    set(&mut fields, field, slot);
                }
                // `steps` yields computed steps as `StepRef::Computed`.
                StepRef::Step(MapStep::Computed { .. }) => {}
            }
        }
        let columns: Arc<[Column]> = fields
            .iter()
            .map(|(name, slot)| Column::new(name.clone(), kinds[*slot]))
            .collect();
        let out: Vec<usize> = fields.iter().map(|f| f.1).collect();
        let identity = ops.is_empty()
            && plan.config.sanitize.is_noop()
            && out.iter().enumerate().all(|(i, s)| i == *s)
            && columns[..] == input[..];
        let rule_slots = plan
            .rules
            .fields()
            .map(|name| {
                let slot = fields.iter().find(|f| f.0 == name).map(|f| f.1);
                (name.to_owned(), slot)
            })
            .collect();
        Some(RowProgram {
            slots: kinds.len(),
            ops,
            out,
            columns,
            identity,
            rule_slots,
        })
    }

    /// Map, sanitise and validate `rows`; `None` when a value would not keep its
    /// column's kind (the record path then takes the batch).
    pub(crate) fn run(&self, plan: &StreamPlan, rows: &RowBatch) -> Option<RowsDone> {
        let sanitize = &plan.config.sanitize;
        let clean = !sanitize.is_noop();
        let mut out = if self.identity {
            None
        } else {
            Some(RowBatch::with_capacity(
                rows.stream.clone(),
                self.columns.clone(),
                rows.len(),
                rows.text_len() + rows.text_len() / 8,
            ))
        };
        let mut from = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        let mut slots: Vec<Val<'_>> = Vec::with_capacity(self.slots);
        for row in rows.rows() {
            slots.clear();
            slots.extend(row.cells().map(Val::from_cell));
            slots.resize(self.slots, Val::Null);
            if let Err(reason) = self.map(&mut slots) {
                rejected.push((row.to_record(), FailureStage::Mapping, reason));
                continue;
            }
            if clean {
                for (column, &slot) in self.columns.iter().zip(&self.out) {
                    if let Val::Text(text) = &mut slots[slot] {
                        let text = std::mem::take(text);
                        slots[slot] = Val::Text(sanitize.clean(&column.name, text));
                    }
                }
            }
            let checked = plan.rules.check_fields(|name| {
                self.rule_slots
                    .iter()
                    .find(|(field, _)| field == name)
                    .and_then(|(_, slot)| slot.map(|s| &slots[s]))
            });
            if let Err(reason) = checked {
                rejected.push((row.to_record(), FailureStage::Validation, reason));
                continue;
            }
            if let Some(out) = &mut out {
                for (column, &slot) in self.columns.iter().zip(&self.out) {
                    if !slots[slot].write_cell(column.kind, out) {
                        return None;
                    }
                }
            }
            from.push(row.index());
        }
        if let Some(out) = out {
            return Some(RowsDone {
                rows: Some(out),
                from,
                changed: true,
                rejected,
            });
        }
        if rejected.is_empty() {
            return Some(RowsDone {
                rows: None,
                from,
                changed: false,
                rejected,
            });
        }
        // Unchanged rows, some left out: copied, each its own original.
        let mut kept = RowBatch::with_capacity(
            rows.stream.clone(),
            rows.shared_columns().clone(),
            from.len(),
            rows.text_len(),
        );
        let width = rows.columns().len();
        for row in from.iter().filter_map(|&i| rows.row(i)) {
            kept.push_row((0..width).map(|c| row.text(c))).ok()?;
        }
        Some(RowsDone {
            rows: Some(kept),
            from,
            changed: false,
            rejected,
        })
    }

    /// Run the mapping's steps on one row's slots.
    fn map<'a>(&'a self, slots: &mut [Val<'a>]) -> Result<(), String> {
        for op in &self.ops {
            match op {
                Op::Cast { slot, to, field } => {
                    let value = std::mem::replace(&mut slots[*slot], Val::Null);
                    if !value.is_null() {
                        slots[*slot] = cast_val(value, *to)
                            .map_err(|why| format!("cannot cast {field} to {to:?}: {why}"))?;
                    }
                }
                Op::Default { slot, value } => {
                    if slots[*slot].is_null() {
                        slots[*slot] = value.reborrow();
                    }
                }
                Op::Set { slot, value } => slots[*slot] = value.reborrow(),
                Op::Template { slot, pieces } => {
                    let mut text = String::new();
                    for piece in pieces {
                        match piece {
                            TemplatePiece::Text(t) => text.push_str(t),
                            TemplatePiece::Slot(s) => match &slots[*s] {
                                Val::Null => {}
                                Val::Text(t) => text.push_str(t),
                                other => other.write_json_text(&mut text),
                            },
                        }
                    }
                    slots[*slot] = Val::Text(Cow::Owned(text));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
