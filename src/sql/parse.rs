//! SQL text → a typed, validated [`Plan`] (sqlparser's AST never leaves this file).
//!
//! Owns the SQL subset Skerry answers and Harper's messages for text it cannot parse. Every
//! construct outside the subset is refused here with a clear "not supported" naming it, so the
//! executor never meets SQL it could answer wrongly. Knows nothing of the catalog: names are
//! resolved (and unknown tables and columns reported) by `exec`.

use super::eval::Rx;
use crate::core::error::OpError;
use serde_json::{Number, Value};
use sqlparser::ast as sq;
use sqlparser::dialect::{Dialect, MySqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

/// Longest SQL text accepted (the request body limit already bounds it; this keeps one
/// statement's parse and plan small).
pub const MAX_SQL_LEN: usize = 1 << 20;
/// Most expression nodes one statement may have (VALUES rows included).
const MAX_NODES: usize = 200_000;

const PARSE_HINT: &str =
    "Please ensure your SQL is valid. Try adding backticks to reserved words and schema table references.";

/// Harper's answer to a `sql` field that is not text.
pub fn not_text() -> OpError {
    OpError::bad_request(format!("We had trouble parsing your request. {PARSE_HINT}"))
}

/// Harper's answer to a missing or empty `sql` field.
pub fn missing() -> OpError {
    OpError::bad_request("The 'sql' parameter is missing from the request body")
}

fn unsupported(what: impl std::fmt::Display) -> OpError {
    OpError::bad_request(format!("{what} is not supported in SQL"))
}

/// A statement, ready for the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Select(Box<Select>),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
}

/// `database.table [AS alias]`; `alias` is the name columns are qualified with.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRef {
    pub database: String,
    pub table: String,
    pub alias: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    /// Every row of the joined table at least once: the inner rows, then the joined table's
    /// rows no earlier row matched (with nulls for the earlier tables).
    Right,
    /// LEFT and RIGHT at once.
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub kind: JoinKind,
    pub table: TableRef,
    pub on: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*`
    Star,
    /// `alias.*`
    QualifiedStar(String),
    /// An expression and its output name (the alias, else Harper's default).
    Expr { expr: Expr, name: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub expr: Expr,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// None for `SELECT <expressions>` without FROM.
    pub from: Option<TableRef>,
    pub joins: Vec<Join>,
    pub items: Vec<SelectItem>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub distinct: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub table: TableRef,
    pub columns: Vec<String>,
    /// Constant rows, already evaluated.
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub table: TableRef,
    pub set: Vec<(String, Expr)>,
    pub filter: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub table: TableRef,
    pub filter: Option<Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// Harper's GROUP_CONCAT: the group's non-null values as text, comma separated.
    GroupConcat,
}

/// Scalar functions: the ones Harper's SQL guide documents (string, math, logical, date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Concat,
    ConcatWs,
    Instr,
    Len,
    Lower,
    Upper,
    Replace,
    Substring,
    Trim,
    Abs,
    Ceil,
    Floor,
    Round,
    Sqrt,
    Exp,
    Random,
    IfNull,
    NullIf,
    Coalesce,
    If,
    CurrentDate,
    CurrentTime,
    Now,
    Extract,
    DateAdd,
    DateSub,
    DateDiff,
    DateFormat,
    Date,
    /// Parts of a date as numbers (AlaSQL's YEAR ... SECOND, in UTC).
    Year,
    Month,
    Day,
    DayOfWeek,
    Hour,
    Minute,
    Second,
    OffsetUtc,
}

impl Func {
    fn by_name(name: &str) -> Option<(Func, usize, usize)> {
        use Func::*;
        // (function, fewest arguments, most arguments)
        Some(match name {
            "CONCAT" => (Concat, 1, 64),
            "CONCAT_WS" => (ConcatWs, 2, 64),
            "INSTR" => (Instr, 2, 2),
            "LEN" | "LENGTH" | "CHAR_LENGTH" => (Len, 1, 1),
            "LOWER" | "LCASE" => (Lower, 1, 1),
            "UPPER" | "UCASE" => (Upper, 1, 1),
            "REPLACE" => (Replace, 3, 3),
            "SUBSTRING" | "SUBSTR" | "MID" => (Substring, 2, 3),
            "TRIM" => (Trim, 1, 1),
            "ABS" => (Abs, 1, 1),
            "CEIL" | "CEILING" => (Ceil, 1, 1),
            "FLOOR" => (Floor, 1, 1),
            "ROUND" => (Round, 1, 2),
            "SQRT" => (Sqrt, 1, 1),
            "EXP" => (Exp, 1, 1),
            "RANDOM" | "RAND" => (Random, 0, 0),
            "IFNULL" | "ISNULL" | "NVL" => (IfNull, 2, 2),
            "NULLIF" => (NullIf, 2, 2),
            "COALESCE" => (Coalesce, 1, 64),
            "IF" | "IIF" => (If, 3, 3),
            "CURRENT_DATE" => (CurrentDate, 0, 0),
            "CURRENT_TIME" => (CurrentTime, 0, 0),
            "NOW" | "GETDATE" | "CURRENT_TIMESTAMP" => (Now, 0, 0),
            "EXTRACT" => (Extract, 2, 2),
            "DATE_ADD" => (DateAdd, 3, 3),
            "DATE_SUB" => (DateSub, 3, 3),
            "DATE_DIFF" => (DateDiff, 2, 3),
            "DATE_FORMAT" => (DateFormat, 2, 2),
            // Harper's guide: DATE() without an argument is now, and GET_SERVER_TIME() is now
            // in the server's time zone in DATE's format (Skerry's clock is UTC).
            "DATE" => (Date, 0, 1),
            "GET_SERVER_TIME" => (Date, 0, 0),
            "YEAR" => (Year, 1, 1),
            "MONTH" => (Month, 1, 1),
            "DAY" => (Day, 1, 1),
            "DAYOFWEEK" => (DayOfWeek, 1, 1),
            "HOUR" => (Hour, 1, 1),
            "MINUTE" => (Minute, 1, 1),
            "SECOND" => (Second, 1, 1),
            "OFFSET_UTC" => (OffsetUtc, 2, 2),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CastTo {
    String,
    Integer,
    Number,
    Boolean,
}

/// CONVERT's target type, as AlaSQL names them (sizes where it reads them).
#[derive(Debug, Clone, PartialEq)]
pub enum ConvertTo {
    /// INT, INTEGER, SMALLINT, BIGINT, SERIAL...: JavaScript's `x | 0`.
    Int,
    /// STRING, VARCHAR, NVARCHAR [(n)]: the text, cut to n characters.
    Text(Option<usize>),
    /// CHAR, NCHAR, CHARACTER [(n)]: the text padded with spaces, then cut, to n.
    Char(Option<usize>),
    /// NUMBER, FLOAT, DECIMAL, NUMERIC [(precision[, scale])].
    Number(Option<u32>, Option<u32>),
    Money,
    Boolean,
    Date,
    DateTime,
    /// A name that is no type: reported after the columns are bound, as Harper reports the
    /// unknown column first (`CONVERT(price, INT)` is "unknown column INT").
    Unknown(String),
}

impl ConvertTo {
    fn parse(t: &str) -> ConvertTo {
        let t = t.trim().to_ascii_uppercase();
        let (name, args) = match t.split_once('(') {
            Some((n, rest)) => (n.trim().to_string(), rest.trim_end_matches(')').to_string()),
            None => (t.clone(), String::new()),
        };
        let nums: Vec<Option<u32>> = args
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| a.trim().parse::<u32>().ok())
            .collect();
        if nums.iter().any(Option::is_none) || nums.len() > 2 {
            return ConvertTo::Unknown(t);
        }
        let size = nums.first().copied().flatten();
        let scale = nums.get(1).copied().flatten();
        let one = nums.len() <= 1;
        match name.as_str() {
            "INT" | "INTEGER" | "SMALLINT" | "BIGINT" | "SERIAL" | "SMALLSERIAL" | "BIGSERIAL"
                if nums.is_empty() =>
            {
                ConvertTo::Int
            }
            "STRING" | "VARCHAR" | "NVARCHAR" | "CHARACTER VARYING" if one => {
                ConvertTo::Text(size.map(|n| n as usize))
            }
            "CHAR" | "NCHAR" | "CHARACTER" if one => ConvertTo::Char(size.map(|n| n as usize)),
            "NUMBER" | "FLOAT" | "DECIMAL" | "NUMERIC" => ConvertTo::Number(size, scale),
            "MONEY" if nums.is_empty() => ConvertTo::Money,
            "BOOLEAN" | "BOOL" if nums.is_empty() => ConvertTo::Boolean,
            "DATE" if nums.is_empty() => ConvertTo::Date,
            "DATETIME" | "DATETIME2" if nums.is_empty() => ConvertTo::DateTime,
            _ => ConvertTo::Unknown(t),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `[qualifier.]name`; `slot` is filled in by the executor when it binds names to tables.
    Column {
        qualifier: Option<String>,
        name: String,
        slot: usize,
    },
    Literal(Value),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    Func(Func, Vec<Expr>),
    /// An aggregate; `arg` None is `COUNT(*)`. The executor numbers them (`AggRef`).
    Agg {
        agg: Agg,
        arg: Option<Box<Expr>>,
        distinct: bool,
    },
    /// The executor's reference to the n-th aggregate of a grouped query.
    AggRef(usize),
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, CastTo),
    /// `expr REGEXP pattern` / `REGEXP_LIKE(expr, pattern[, flags])`; `compiled` holds the
    /// expression compiled once when pattern and flags are literals.
    Regexp {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        flags: Option<Box<Expr>>,
        compiled: Option<Rx>,
    },
    /// `CONVERT(type, expr[, style])` with AlaSQL's semantics.
    Convert {
        expr: Box<Expr>,
        to: ConvertTo,
        style: Option<u16>,
    },
}

impl Expr {
    /// Calls `f` on this expression and every sub-expression.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Column { .. } | Expr::Literal(_) | Expr::AggRef(_) => {}
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull(e, _)
            | Expr::Cast(e, _)
            | Expr::Convert { expr: e, .. } => e.walk(f),
            Expr::Regexp {
                expr,
                pattern,
                flags,
                ..
            } => {
                expr.walk(f);
                pattern.walk(f);
                if let Some(x) = flags {
                    x.walk(f);
                }
            }
            Expr::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.walk(f);
                low.walk(f);
                high.walk(f);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk(f);
                pattern.walk(f);
            }
            Expr::Func(_, args) => args.iter().for_each(|e| e.walk(f)),
            Expr::Agg { arg, .. } => {
                if let Some(a) = arg {
                    a.walk(f)
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk(f);
                }
                for (w, t) in whens {
                    w.walk(f);
                    t.walk(f);
                }
                if let Some(o) = otherwise {
                    o.walk(f);
                }
            }
        }
    }

    /// Calls `f` on every sub-expression, mutably, children first.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Column { .. } | Expr::Literal(_) | Expr::AggRef(_) => {}
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull(e, _)
            | Expr::Cast(e, _)
            | Expr::Convert { expr: e, .. } => e.walk_mut(f),
            Expr::Regexp {
                expr,
                pattern,
                flags,
                ..
            } => {
                expr.walk_mut(f);
                pattern.walk_mut(f);
                if let Some(x) = flags {
                    x.walk_mut(f);
                }
            }
            Expr::Binary(_, a, b) => {
                a.walk_mut(f);
                b.walk_mut(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.walk_mut(f);
                list.iter_mut().for_each(|e| e.walk_mut(f));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.walk_mut(f);
                low.walk_mut(f);
                high.walk_mut(f);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk_mut(f);
                pattern.walk_mut(f);
            }
            Expr::Func(_, args) => args.iter_mut().for_each(|e| e.walk_mut(f)),
            Expr::Agg { arg, .. } => {
                if let Some(a) = arg {
                    a.walk_mut(f)
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk_mut(f);
                }
                for (w, t) in whens {
                    w.walk_mut(f);
                    t.walk_mut(f);
                }
                if let Some(o) = otherwise {
                    o.walk_mut(f);
                }
            }
        }
        f(self);
    }

    pub fn has_aggregate(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Agg { .. }));
        found
    }
}

/// Harper's "Invalid SQL at: <context>" for a parse error at byte `pos`: up to 20 characters
/// before the failing token (with "..." when there are more) and 20 from it on.
fn invalid_at(sql: &str, pos: usize) -> OpError {
    let chars: Vec<char> = sql.chars().collect();
    let pos = pos.min(chars.len());
    let mut ctx = String::new();
    if pos > 20 {
        ctx.push_str("...");
    }
    ctx.extend(&chars[pos.saturating_sub(20)..pos]);
    ctx.extend(chars[pos..].iter().take(20));
    let ctx = ctx.replace('\n', "");
    OpError::bad_request(format!("Invalid SQL at: {ctx}. {PARSE_HINT}"))
}

/// The character offset sqlparser's message points at ("... at Line: L, Column: C"), or the
/// end of the text when it names none (the statement ended too early).
fn error_position(sql: &str, msg: &str) -> usize {
    let grab = |key: &str| -> Option<usize> {
        let at = msg.rfind(key)? + key.len();
        let digits: String = msg[at..]
            .chars()
            .skip_while(|c| *c == ' ')
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let (Some(line), Some(col)) = (grab("Line:"), grab("Column:")) else {
        return sql.chars().count();
    };
    char_offset(sql, line, col)
}

/// MySQL's dialect, except that CONVERT takes the type first (`CONVERT(INT, price, style)`), as
/// AlaSQL -- and so Harper -- reads it. Every other question goes to MySqlDialect unchanged
/// (the list is MySqlDialect's own overrides; `dialect()` keeps its `dialect_of!` checks).
#[derive(Debug)]
struct HarperDialect(MySqlDialect);

macro_rules! same_as_mysql {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { self.0.$name() })*
    };
}

impl Dialect for HarperDialect {
    fn dialect(&self) -> std::any::TypeId {
        self.0.dialect()
    }
    fn convert_type_before_value(&self) -> bool {
        true
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.0.identifier_quote_style(identifier)
    }
    fn supports_string_literal_table_alias(&self, explicit: bool) -> bool {
        self.0.supports_string_literal_table_alias(explicit)
    }
    fn ordered_bind_placeholder_style(&self) -> Option<sqlparser::dialect::BindPlaceholderStyle> {
        self.0.ordered_bind_placeholder_style()
    }
    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &sq::Expr,
        precedence: u8,
    ) -> Option<Result<sq::Expr, ParserError>> {
        self.0.parse_infix(parser, expr, precedence)
    }
    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<sq::Statement, ParserError>> {
        self.0.parse_statement(parser)
    }
    fn is_table_factor_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.0.is_table_factor_alias(explicit, kw, parser)
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.0.get_next_precedence(parser)
    }
    same_as_mysql!(
        supports_string_literal_backslash_escape,
        supports_string_literal_concatenation,
        ignores_wildcard_escapes,
        supports_numeric_prefix,
        supports_literal_prefix_in_qualified_name,
        supports_bitwise_shift_operators,
        supports_singular_value_keyword,
        supports_multiline_comment_hints,
        require_interval_qualifier,
        supports_limit_comma,
        supports_create_table_select,
        supports_insert_set,
        supports_user_host_grantee,
        supports_table_hints,
        requires_single_line_comment_whitespace,
        supports_hash_comment,
        supports_match_against,
        supports_select_modifiers,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_alter_column_position,
        supports_update_order_by,
        supports_data_type_signed_suffix,
        supports_data_type_zerofill_suffix,
        supports_cross_join_constraint,
        supports_double_ampersand_operator,
        supports_binary_kw_as_cast,
        supports_table_partitions,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
    );
}

/// Where Harper's parser stops on text sqlparser accepts: `NOT REGEXP`, `RLIKE`, `REGEXP(...)`
/// as a function and `FULL JOIN` without OUTER are syntax errors there (400 "Invalid SQL at"),
/// so they are here, at the token Harper's message points at. Only tokenizes when one of the
/// words occurs at all.
fn harper_syntax_error(sql: &str) -> Option<OpError> {
    let upper = sql.to_ascii_uppercase();
    if !["REGEXP", "RLIKE", "FULL"]
        .iter()
        .any(|w| upper.contains(w))
    {
        return None;
    }
    let dialect = HarperDialect(MySqlDialect {});
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    let words: Vec<(String, sqlparser::tokenizer::Location, &Token)> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|t| {
            let w = match &t.token {
                Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
                _ => String::new(),
            };
            (w, t.span.start, &t.token)
        })
        .collect();
    for (i, (w, at, _)) in words.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| words[p].0.as_str());
        let next = words.get(i + 1).map(|n| n.2);
        let bad = match w.as_str() {
            "REGEXP" => prev == Some("NOT") || next == Some(&Token::LParen),
            "RLIKE" => true,
            "JOIN" => prev == Some("FULL"),
            _ => false,
        };
        if bad {
            let pos = char_offset(sql, at.line as usize, at.column as usize);
            return Some(invalid_at(sql, pos));
        }
    }
    None
}

/// The character offset of a 1-based line and column.
fn char_offset(sql: &str, line: usize, col: usize) -> usize {
    let mut pos = 0;
    for (i, l) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return pos + col.saturating_sub(1);
        }
        pos += l.chars().count() + 1;
    }
    sql.chars().count()
}

/// Parses one SQL statement into a plan.
pub fn parse(sql: &str) -> Result<Plan, OpError> {
    if sql.trim().is_empty() {
        return Err(missing());
    }
    if sql.len() > MAX_SQL_LEN {
        return Err(OpError::bad_request(format!(
            "SQL text is longer than {MAX_SQL_LEN} bytes"
        )));
    }
    if let Some(e) = harper_syntax_error(sql) {
        return Err(e);
    }
    let stmts = Parser::new(&HarperDialect(MySqlDialect {}))
        .with_recursion_limit(64)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| invalid_at(sql, error_position(sql, &e.to_string())))?;
    let stmt = match stmts.as_slice() {
        [one] => one,
        [] => return Err(missing()),
        _ => return Err(unsupported("more than one statement in a request")),
    };
    let mut b = Builder { nodes: 0 };
    match stmt {
        sq::Statement::Query(q) => Ok(Plan::Select(Box::new(b.query(q, sql)?))),
        sq::Statement::Insert(i) => b.insert(i).map(Plan::Insert),
        sq::Statement::Update(u) => b.update(u).map(Plan::Update),
        sq::Statement::Delete(d) => b.delete(d).map(Plan::Delete),
        _ => Err(statement_kind(sql)),
    }
}

/// Harper's 500 for a statement type it does not run (CREATE, DROP, ALTER, ...).
fn statement_kind(sql: &str) -> OpError {
    let kind = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let shown: String = sql.chars().take(80).collect();
    OpError::internal(format!("unsupported SQL type {kind} in SQL: {shown}"))
}

struct Builder {
    nodes: usize,
}

fn ident_name(i: &sq::Ident) -> String {
    i.value.clone()
}

/// `db.table` from an object name; an unquoted `2024.notes` arrives as one identifier.
fn table_name(name: &sq::ObjectName) -> Result<(String, String), OpError> {
    let mut parts = Vec::new();
    for p in &name.0 {
        match p {
            sq::ObjectNamePart::Identifier(i) if i.quote_style.is_none() => {
                parts.extend(i.value.split('.').map(str::to_string))
            }
            sq::ObjectNamePart::Identifier(i) => parts.push(i.value.clone()),
            _ => return Err(unsupported(format!("table name {name}"))),
        }
    }
    match parts.as_slice() {
        [db, t] if !db.is_empty() && !t.is_empty() => Ok((db.clone(), t.clone())),
        // Harper's answer for a table without its database.
        [t] => Err(OpError::internal(format!(
            "schema not defined for table {t}"
        ))),
        _ => Err(unsupported(format!("table name {name}"))),
    }
}

fn table_ref(tf: &sq::TableFactor) -> Result<TableRef, OpError> {
    let sq::TableFactor::Table {
        name,
        alias,
        args,
        with_hints,
        version,
        partitions,
        sample,
        ..
    } = tf
    else {
        return Err(unsupported("a subquery or function in FROM"));
    };
    if args.is_some() || !with_hints.is_empty() || version.is_some() || !partitions.is_empty() {
        return Err(unsupported(format!("table options on {name}")));
    }
    if sample.is_some() {
        return Err(unsupported("TABLESAMPLE"));
    }
    let (database, table) = table_name(name)?;
    let alias = match alias {
        Some(a) if !a.columns.is_empty() => return Err(unsupported("column aliases on a table")),
        Some(a) => ident_name(&a.name),
        None => table.clone(),
    };
    Ok(TableRef {
        database,
        table,
        alias,
    })
}

fn number(s: &str) -> Result<Value, OpError> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::Number(i.into()));
    }
    s.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| OpError::bad_request(format!("'{s}' is not a number")))
}

fn literal(v: &sq::Value) -> Result<Value, OpError> {
    Ok(match v {
        sq::Value::Number(n, _) => number(n)?,
        sq::Value::SingleQuotedString(s) | sq::Value::DoubleQuotedString(s) => {
            Value::String(s.clone())
        }
        sq::Value::Boolean(b) => Value::Bool(*b),
        sq::Value::Null => Value::Null,
        other => return Err(unsupported(format!("the literal {other}"))),
    })
}

fn const_u64(e: &sq::Expr, what: &str) -> Result<u64, OpError> {
    match e {
        sq::Expr::Value(v) => match &v.value {
            sq::Value::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| OpError::bad_request(format!("{what} must be a non-negative integer")))
}

impl Builder {
    fn count(&mut self) -> Result<(), OpError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(OpError::bad_request(format!(
                "SQL statement has more than {MAX_NODES} expressions"
            )));
        }
        Ok(())
    }

    fn query(&mut self, q: &sq::Query, sql: &str) -> Result<Select, OpError> {
        if q.with.is_some() {
            return Err(statement_kind("with"));
        }
        if q.fetch.is_some() || !q.locks.is_empty() || q.for_clause.is_some() {
            return Err(unsupported("FETCH / FOR clauses"));
        }
        if q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(unsupported("SETTINGS / FORMAT / pipe clauses"));
        }
        let s = match q.body.as_ref() {
            sq::SetExpr::Select(s) => s,
            sq::SetExpr::SetOperation { op, .. } => {
                return Err(unsupported(op.to_string().to_uppercase()))
            }
            sq::SetExpr::Query(_) => return Err(unsupported("a parenthesised subquery")),
            sq::SetExpr::Values(_) => return Err(unsupported("VALUES as a query")),
            _ => return Err(statement_kind(sql)),
        };
        let mut out = self.select(s)?;
        if let Some(ob) = &q.order_by {
            if ob.interpolate.is_some() {
                return Err(unsupported("INTERPOLATE"));
            }
            match &ob.kind {
                sq::OrderByKind::Expressions(list) => {
                    for o in list {
                        if o.with_fill.is_some() {
                            return Err(unsupported("WITH FILL"));
                        }
                        if o.options.nulls_first.is_some() {
                            return Err(unsupported("NULLS FIRST / LAST"));
                        }
                        let descending = match &o.options.sort {
                            None | Some(sq::OrderBySort::Asc) => false,
                            Some(sq::OrderBySort::Desc) => true,
                            Some(_) => return Err(unsupported("ORDER BY ... USING")),
                        };
                        out.order_by.push(OrderKey {
                            expr: self.expr(&o.expr)?,
                            descending,
                        });
                    }
                }
                sq::OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
            }
        }
        match &q.limit_clause {
            None => {}
            Some(sq::LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(unsupported("LIMIT BY"));
                }
                if let Some(l) = limit {
                    out.limit = Some(const_u64(l, "LIMIT")?);
                }
                if let Some(o) = offset {
                    out.offset = const_u64(&o.value, "OFFSET")?;
                }
            }
            Some(sq::LimitClause::OffsetCommaLimit { offset, limit }) => {
                out.offset = const_u64(offset, "OFFSET")?;
                out.limit = Some(const_u64(limit, "LIMIT")?);
            }
        }
        Ok(out)
    }

    fn select(&mut self, s: &sq::Select) -> Result<Select, OpError> {
        if s.top.is_some() {
            return Err(unsupported("TOP"));
        }
        if s.into.is_some() {
            return Err(unsupported("SELECT INTO"));
        }
        if !s.lateral_views.is_empty() || s.prewhere.is_some() || !s.connect_by.is_empty() {
            return Err(unsupported("LATERAL VIEW / PREWHERE / CONNECT BY"));
        }
        if !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty() {
            return Err(unsupported("CLUSTER / DISTRIBUTE / SORT BY"));
        }
        if !s.named_window.is_empty() || s.qualify.is_some() {
            return Err(unsupported("window functions"));
        }
        if s.exclude.is_some() || s.select_modifiers.is_some() || s.value_table_mode.is_some() {
            return Err(unsupported("SELECT modifiers"));
        }
        let distinct = match &s.distinct {
            None | Some(sq::Distinct::All) => false,
            Some(sq::Distinct::Distinct) => true,
            Some(sq::Distinct::On(_)) => return Err(unsupported("DISTINCT ON")),
        };
        let (from, joins) = match s.from.split_first() {
            None => (None, Vec::new()),
            Some((first, rest)) => {
                let base = table_ref(&first.relation)?;
                let mut joins = Vec::new();
                for j in &first.joins {
                    joins.push(self.join(j)?);
                }
                // `FROM a, b` is a CROSS JOIN of b (its own joins follow it).
                for twj in rest {
                    joins.push(Join {
                        kind: JoinKind::Inner,
                        table: table_ref(&twj.relation)?,
                        on: Expr::Literal(Value::Bool(true)),
                    });
                    for j in &twj.joins {
                        joins.push(self.join(j)?);
                    }
                }
                (Some(base), joins)
            }
        };
        let mut items = Vec::new();
        for item in &s.projection {
            items.push(match item {
                sq::SelectItem::Wildcard(opts) => {
                    if opts.opt_exclude.is_some()
                        || opts.opt_except.is_some()
                        || opts.opt_replace.is_some()
                        || opts.opt_rename.is_some()
                        || opts.opt_ilike.is_some()
                    {
                        return Err(unsupported("wildcard options"));
                    }
                    SelectItem::Star
                }
                sq::SelectItem::QualifiedWildcard(kind, _) => match kind {
                    sq::SelectItemQualifiedWildcardKind::ObjectName(n) => match n.0.as_slice() {
                        [sq::ObjectNamePart::Identifier(i)] => {
                            SelectItem::QualifiedStar(ident_name(i))
                        }
                        _ => return Err(unsupported(format!("{n}.*"))),
                    },
                    sq::SelectItemQualifiedWildcardKind::Expr(e) => {
                        return Err(unsupported(format!("{e}.*")))
                    }
                },
                sq::SelectItem::UnnamedExpr(e) => {
                    let expr = self.expr(e)?;
                    let name = match &expr {
                        Expr::Column { name, .. } => name.clone(),
                        _ => e.to_string(),
                    };
                    SelectItem::Expr { expr, name }
                }
                sq::SelectItem::ExprWithAlias { expr, alias } => SelectItem::Expr {
                    expr: self.expr(expr)?,
                    name: ident_name(alias),
                },
                sq::SelectItem::ExprWithAliases { .. } => {
                    return Err(unsupported("multiple aliases"))
                }
            });
        }
        let group_by = match &s.group_by {
            sq::GroupByExpr::Expressions(list, mods) => {
                if !mods.is_empty() {
                    return Err(unsupported("GROUP BY modifiers"));
                }
                list.iter()
                    .map(|e| self.expr(e))
                    .collect::<Result<_, _>>()?
            }
            sq::GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL")),
        };
        Ok(Select {
            from,
            joins,
            items,
            filter: s.selection.as_ref().map(|e| self.expr(e)).transpose()?,
            group_by,
            having: s.having.as_ref().map(|e| self.expr(e)).transpose()?,
            order_by: Vec::new(),
            limit: None,
            offset: 0,
            distinct,
        })
    }

    fn join(&mut self, j: &sq::Join) -> Result<Join, OpError> {
        use sq::JoinOperator as J;
        let (kind, constraint) = match &j.join_operator {
            J::Join(c) | J::Inner(c) => (JoinKind::Inner, c),
            J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, c),
            J::Right(c) | J::RightOuter(c) => (JoinKind::Right, c),
            J::FullOuter(c) => (JoinKind::Full, c),
            // MySQL's CROSS JOIN may carry an ON (then it is an inner join).
            J::CrossJoin(c) => (JoinKind::Inner, c),
            _ => return Err(unsupported("this kind of JOIN")),
        };
        let on = match constraint {
            sq::JoinConstraint::On(e) => self.expr(e)?,
            sq::JoinConstraint::Using(_) | sq::JoinConstraint::UsingAlias(..) => {
                return Err(unsupported("JOIN ... USING"))
            }
            sq::JoinConstraint::Natural => return Err(unsupported("NATURAL JOIN")),
            sq::JoinConstraint::None if matches!(j.join_operator, J::CrossJoin(_)) => {
                Expr::Literal(Value::Bool(true))
            }
            sq::JoinConstraint::None => return Err(unsupported("a JOIN without ON")),
        };
        Ok(Join {
            kind,
            table: table_ref(&j.relation)?,
            on,
        })
    }

    fn insert(&mut self, i: &sq::Insert) -> Result<Insert, OpError> {
        let sq::TableObject::TableName(name) = &i.table else {
            return Err(unsupported("INSERT into a function"));
        };
        if i.or.is_some() || i.ignore || i.overwrite || i.replace_into || i.on.is_some() {
            return Err(unsupported("INSERT modifiers (OR / IGNORE / ON ...)"));
        }
        if i.returning.is_some() || i.output.is_some() || !i.assignments.is_empty() {
            return Err(unsupported("INSERT ... RETURNING / SET"));
        }
        if i.partitioned.is_some() || !i.after_columns.is_empty() || i.table_alias.is_some() {
            return Err(unsupported("INSERT options"));
        }
        let (database, table) = table_name(name)?;
        let columns: Vec<String> = i
            .columns
            .iter()
            .map(|c| c.to_string().trim_matches('`').to_string())
            .collect();
        if columns.is_empty() {
            return Err(unsupported("INSERT without a column list"));
        }
        let Some(source) = &i.source else {
            return Err(unsupported("INSERT without VALUES"));
        };
        let sq::SetExpr::Values(values) = source.body.as_ref() else {
            return Err(unsupported("INSERT ... SELECT"));
        };
        let mut rows = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            if row.content.len() != columns.len() {
                return Err(OpError::bad_request(format!(
                    "INSERT has {} columns but a row of {} values",
                    columns.len(),
                    row.content.len()
                )));
            }
            let mut out = Vec::with_capacity(columns.len());
            for e in &row.content {
                let e = self.expr(e)?;
                out.push(super::exec::constant(&e)?);
            }
            rows.push(out);
        }
        Ok(Insert {
            table: TableRef {
                alias: table.clone(),
                database,
                table,
            },
            columns,
            rows,
        })
    }

    fn update(&mut self, u: &sq::Update) -> Result<Update, OpError> {
        if !u.table.joins.is_empty() || u.from.is_some() {
            return Err(unsupported("UPDATE with joins"));
        }
        if u.returning.is_some() || u.output.is_some() || u.or.is_some() {
            return Err(unsupported("UPDATE ... RETURNING"));
        }
        if !u.order_by.is_empty() || u.limit.is_some() {
            return Err(unsupported("UPDATE ... ORDER BY / LIMIT"));
        }
        let table = table_ref(&u.table.relation)?;
        let mut set = Vec::new();
        for a in &u.assignments {
            let sq::AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(unsupported("tuple assignment"));
            };
            let col = match n.0.last() {
                Some(sq::ObjectNamePart::Identifier(i)) => ident_name(i),
                _ => return Err(unsupported(format!("assignment to {n}"))),
            };
            set.push((col, self.expr(&a.value)?));
        }
        Ok(Update {
            table,
            set,
            filter: u.selection.as_ref().map(|e| self.expr(e)).transpose()?,
        })
    }

    fn delete(&mut self, d: &sq::Delete) -> Result<Delete, OpError> {
        if !d.tables.is_empty() || d.using.is_some() {
            return Err(unsupported("multi-table DELETE"));
        }
        if d.returning.is_some() || d.output.is_some() {
            return Err(unsupported("DELETE ... RETURNING"));
        }
        if !d.order_by.is_empty() || d.limit.is_some() {
            return Err(unsupported("DELETE ... ORDER BY / LIMIT"));
        }
        let from = match &d.from {
            sq::FromTable::WithFromKeyword(f) | sq::FromTable::WithoutKeyword(f) => f,
        };
        let [twj] = from.as_slice() else {
            return Err(unsupported("multi-table DELETE"));
        };
        if !twj.joins.is_empty() {
            return Err(unsupported("DELETE with joins"));
        }
        Ok(Delete {
            table: table_ref(&twj.relation)?,
            filter: d.selection.as_ref().map(|e| self.expr(e)).transpose()?,
        })
    }

    fn boxed(&mut self, e: &sq::Expr) -> Result<Box<Expr>, OpError> {
        Ok(Box::new(self.expr(e)?))
    }

    fn expr(&mut self, e: &sq::Expr) -> Result<Expr, OpError> {
        self.count()?;
        use sq::Expr as E;
        Ok(match e {
            E::Identifier(i) => Expr::Column {
                qualifier: None,
                name: ident_name(i),
                slot: 0,
            },
            E::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, n] => Expr::Column {
                    qualifier: Some(ident_name(q)),
                    name: ident_name(n),
                    slot: 0,
                },
                _ => return Err(unsupported(format!("the column reference {e}"))),
            },
            E::Value(v) => Expr::Literal(literal(&v.value)?),
            E::Nested(inner) => self.expr(inner)?,
            E::UnaryOp { op, expr } => match op {
                sq::UnaryOperator::Not => Expr::Not(self.boxed(expr)?),
                sq::UnaryOperator::Minus => match self.expr(expr)? {
                    Expr::Literal(Value::Number(n)) => Expr::Literal(negate(&n)),
                    other => Expr::Neg(Box::new(other)),
                },
                sq::UnaryOperator::Plus => self.expr(expr)?,
                other => return Err(unsupported(format!("the operator {other}"))),
            },
            E::BinaryOp { left, op, right } => {
                use sq::BinaryOperator as B;
                let op = match op {
                    B::Plus => BinOp::Add,
                    B::Minus => BinOp::Sub,
                    B::Multiply => BinOp::Mul,
                    B::Divide => BinOp::Div,
                    B::Modulo => BinOp::Mod,
                    B::StringConcat => BinOp::Concat,
                    B::Eq => BinOp::Eq,
                    B::NotEq => BinOp::Ne,
                    B::Lt => BinOp::Lt,
                    B::LtEq => BinOp::Le,
                    B::Gt => BinOp::Gt,
                    B::GtEq => BinOp::Ge,
                    B::And => BinOp::And,
                    B::Or => BinOp::Or,
                    other => return Err(unsupported(format!("the operator {other}"))),
                };
                Expr::Binary(op, self.boxed(left)?, self.boxed(right)?)
            }
            E::IsNull(x) => Expr::IsNull(self.boxed(x)?, false),
            E::IsNotNull(x) => Expr::IsNull(self.boxed(x)?, true),
            E::In {
                expr,
                target,
                negated,
                global,
            } => {
                if *global {
                    return Err(unsupported("GLOBAL IN"));
                }
                let sq::InTarget::List(list) = target else {
                    return Err(unsupported("a subquery"));
                };
                Expr::InList {
                    expr: self.boxed(expr)?,
                    list: list
                        .iter()
                        .map(|x| self.expr(x))
                        .collect::<Result<_, _>>()?,
                    negated: *negated,
                }
            }
            E::Subquery(_) | E::Exists { .. } => return Err(unsupported("a subquery")),
            E::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between {
                expr: self.boxed(expr)?,
                low: self.boxed(low)?,
                high: self.boxed(high)?,
                negated: *negated,
            },
            E::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    return Err(unsupported("LIKE ANY / ESCAPE"));
                }
                Expr::Like {
                    expr: self.boxed(expr)?,
                    pattern: self.boxed(pattern)?,
                    negated: *negated,
                }
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => Expr::Case {
                operand: operand.as_ref().map(|o| self.boxed(o)).transpose()?,
                whens: conditions
                    .iter()
                    .map(|w| Ok((self.expr(&w.condition)?, self.expr(&w.result)?)))
                    .collect::<Result<_, OpError>>()?,
                otherwise: else_result.as_ref().map(|o| self.boxed(o)).transpose()?,
            },
            E::Cast {
                expr, data_type, ..
            } => {
                let t = data_type.to_string().to_ascii_uppercase();
                let to = if t.starts_with("STRING")
                    || t.starts_with("VARCHAR")
                    || t.starts_with("CHAR")
                    || t.starts_with("TEXT")
                {
                    CastTo::String
                } else if t.starts_with("INT") || t.starts_with("BIGINT") {
                    CastTo::Integer
                } else if t.starts_with("FLOAT")
                    || t.starts_with("DOUBLE")
                    || t.starts_with("DECIMAL")
                    || t.starts_with("NUMBER")
                    || t.starts_with("NUMERIC")
                    || t.starts_with("REAL")
                {
                    CastTo::Number
                } else if t.starts_with("BOOL") {
                    CastTo::Boolean
                } else {
                    return Err(unsupported(format!("CAST to {data_type}")));
                };
                Expr::Cast(self.boxed(expr)?, to)
            }
            E::Ceil { expr, field } | E::Floor { expr, field } => {
                if !matches!(
                    field,
                    sq::CeilFloorKind::DateTimeField(sq::DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported(format!("{e}")));
                }
                let f = if matches!(e, E::Ceil { .. }) {
                    Func::Ceil
                } else {
                    Func::Floor
                };
                Expr::Func(f, vec![self.expr(expr)?])
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr)?];
                args.push(match substring_from {
                    Some(f) => self.expr(f)?,
                    None => Expr::Literal(Value::from(1)),
                });
                if let Some(f) = substring_for {
                    args.push(self.expr(f)?);
                }
                Expr::Func(Func::Substring, args)
            }
            E::Trim {
                expr,
                trim_where,
                trim_what,
                trim_characters,
            } => {
                if trim_where.is_some() || trim_what.is_some() || trim_characters.is_some() {
                    return Err(unsupported("TRIM with options"));
                }
                Expr::Func(Func::Trim, vec![self.expr(expr)?])
            }
            E::RLike {
                negated,
                expr,
                pattern,
                regexp,
            } => {
                if *negated || !*regexp {
                    return Err(unsupported(format!("{e}")));
                }
                regexp_expr(self.expr(expr)?, self.expr(pattern)?, None)?
            }
            E::Convert {
                is_try,
                expr,
                data_type,
                charset,
                styles,
                ..
            } => {
                let Some(data_type) = data_type.as_ref().filter(|_| !*is_try && charset.is_none())
                else {
                    return Err(unsupported(format!("{e}")));
                };
                let style = match styles.as_slice() {
                    [] => None,
                    [s] => Some(
                        const_u64(s, "CONVERT's style")
                            .ok()
                            .and_then(|n| u16::try_from(n).ok())
                            .ok_or_else(|| {
                                OpError::bad_request(format!(
                                    "CONVERT's style must be a style number, not {s}"
                                ))
                            })?,
                    ),
                    _ => return Err(OpError::bad_request("CONVERT takes 2 or 3 arguments")),
                };
                // AlaSQL ignores style 0 (it tests the style for truth).
                let style = style.filter(|s| *s != 0);
                if let Some(s) = style {
                    if super::eval::convert_style(s).is_none() {
                        return Err(OpError::bad_request(format!(
                            "CONVERT style {s} is not supported (styles: {})",
                            super::eval::CONVERT_STYLES
                                .iter()
                                .map(|(n, ..)| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                Expr::Convert {
                    expr: self.boxed(expr)?,
                    to: ConvertTo::parse(&data_type.to_string()),
                    style,
                }
            }
            E::Function(f) => self.function(f)?,
            other => return Err(unsupported(format!("the expression {other}"))),
        })
    }

    fn function(&mut self, f: &sq::Function) -> Result<Expr, OpError> {
        let name = f.name.to_string().to_ascii_uppercase();
        if f.over.is_some() {
            return Err(unsupported("window functions (OVER)"));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(unsupported(format!("{name} with FILTER / WITHIN GROUP")));
        }
        let (distinct, raw_args): (bool, Vec<&sq::FunctionArg>) = match &f.args {
            sq::FunctionArguments::None => (false, Vec::new()),
            sq::FunctionArguments::Subquery(_) => return Err(unsupported("a subquery")),
            sq::FunctionArguments::List(l) => {
                if !l.clauses.is_empty() {
                    return Err(unsupported(format!("{name} with clauses")));
                }
                (
                    matches!(
                        l.duplicate_treatment,
                        Some(sq::DuplicateTreatment::Distinct)
                    ),
                    l.args.iter().collect(),
                )
            }
        };
        let mut star = false;
        let mut args = Vec::new();
        for a in raw_args {
            match a {
                sq::FunctionArg::Unnamed(sq::FunctionArgExpr::Expr(e)) => args.push(self.expr(e)?),
                sq::FunctionArg::Unnamed(sq::FunctionArgExpr::Wildcard) => star = true,
                _ => return Err(unsupported(format!("the arguments of {name}"))),
            }
        }
        let agg = match name.as_str() {
            "COUNT" => Some(Agg::Count),
            "SUM" => Some(Agg::Sum),
            "AVG" => Some(Agg::Avg),
            "MIN" => Some(Agg::Min),
            "MAX" => Some(Agg::Max),
            "GROUP_CONCAT" => Some(Agg::GroupConcat),
            _ => None,
        };
        if let Some(agg) = agg {
            let arg = match (star, args.len()) {
                (true, 0) if agg == Agg::Count && !distinct => None,
                (false, 1) => {
                    let a = args.remove(0);
                    if a.has_aggregate() {
                        return Err(unsupported("an aggregate inside an aggregate"));
                    }
                    Some(Box::new(a))
                }
                _ => return Err(OpError::bad_request(format!("{name} takes one argument"))),
            };
            return Ok(Expr::Agg { agg, arg, distinct });
        }
        if star || distinct {
            return Err(unsupported(format!("{name}(*) / {name}(DISTINCT ...)")));
        }
        let (func, min, max) = match Func::by_name(&name) {
            Some(f) => (Some(f.0), f.1, f.2),
            // Harper's REGEXP_LIKE(a) matches everything (RegExp(undefined)); here it is
            // refused by its argument count like any function's.
            None if name == "REGEXP_LIKE" => (None, 2, 3),
            None => return Err(unsupported(format!("the function {name}"))),
        };
        if args.len() < min || args.len() > max {
            return Err(OpError::bad_request(format!(
                "{name} takes {}{} arguments, not {}",
                min,
                if max > min {
                    format!(" to {max}")
                } else {
                    String::new()
                },
                args.len()
            )));
        }
        match func {
            Some(func) => Ok(Expr::Func(func, args)),
            None => {
                let mut args = args.into_iter();
                let (Some(expr), Some(pattern)) = (args.next(), args.next()) else {
                    return Err(OpError::bad_request("REGEXP_LIKE takes 2 to 3 arguments"));
                };
                regexp_expr(expr, pattern, args.next())
            }
        }
    }
}

/// A REGEXP / REGEXP_LIKE node, its expression compiled now when pattern and flags are
/// literals (an invalid one is refused before any row is read).
fn regexp_expr(expr: Expr, pattern: Expr, flags: Option<Expr>) -> Result<Expr, OpError> {
    let literal = |e: &Expr| match e {
        Expr::Literal(v) if !v.is_null() => Some(super::eval::text(v)),
        _ => None,
    };
    let compiled = match (literal(&pattern), flags.as_ref().map(literal)) {
        (Some(p), None) => Some(Rx::compile(&p, "")?),
        (Some(p), Some(Some(f))) => Some(Rx::compile(&p, &f)?),
        _ => None,
    };
    Ok(Expr::Regexp {
        expr: Box::new(expr),
        pattern: Box::new(pattern),
        flags: flags.map(Box::new),
        compiled,
    })
}

fn negate(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::from(-i);
    }
    Number::from_f64(-n.as_f64().unwrap_or(0.0))
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_show_harpers_context() {
        let e = parse("SELECT * FROM").unwrap_err();
        assert_eq!(
            e.message(),
            format!("Invalid SQL at: SELECT * FROM. {PARSE_HINT}")
        );
        let e = parse("SELECT * FROM shop.customers WHERE").unwrap_err();
        assert_eq!(
            e.message(),
            format!("Invalid SQL at: ...shop.customers WHERE. {PARSE_HINT}")
        );
    }

    #[test]
    fn numeric_database_names_parse_quoted_or_not() {
        for sql in ["SELECT * FROM 2024.notes", "SELECT * FROM `2024`.notes"] {
            let Plan::Select(s) = parse(sql).unwrap() else {
                panic!()
            };
            let from = s.from.unwrap();
            assert_eq!(
                (from.database.as_str(), from.table.as_str()),
                ("2024", "notes")
            );
        }
    }

    #[test]
    fn get_server_time_and_date_without_argument_are_now_as_a_date_string() {
        let Ok(Plan::Select(s)) = parse("SELECT GET_SERVER_TIME() AS g, DATE() AS d") else {
            panic!()
        };
        for item in &s.items {
            let SelectItem::Expr { expr, .. } = item else {
                panic!()
            };
            assert_eq!(expr, &Expr::Func(Func::Date, vec![]));
        }
        assert!(parse("SELECT GET_SERVER_TIME(1)").is_err());
    }

    #[test]
    fn unsupported_constructs_are_named() {
        for (sql, word) in [
            ("SELECT id FROM a.b UNION SELECT id FROM a.c", "UNION"),
            (
                "SELECT id FROM a.b WHERE x IN (SELECT id FROM a.c)",
                "subquery",
            ),
            ("SELECT ROW_NUMBER() OVER (ORDER BY id) FROM a.b", "window"),
            ("SELECT * FROM a.b NATURAL JOIN a.c", "NATURAL JOIN"),
            ("SELECT NOSUCH(x) FROM a.b", "NOSUCH"),
            ("SELECT 1; SELECT 2", "more than one statement"),
        ] {
            let e = parse(sql).unwrap_err();
            assert!(e.message().contains(word), "{sql}: {}", e.message());
            assert!(e.message().contains("not supported"), "{sql}");
        }
        let e = parse("CREATE TABLE a.x (id INT)").unwrap_err();
        assert_eq!(e.status, 500);
        assert!(e.message().starts_with("unsupported SQL type create"));
    }

    #[test]
    fn harpers_date_part_functions_and_group_concat_parse() {
        for (sql, want) in [
            ("SELECT YEAR(d) FROM a.b", Func::Year),
            ("SELECT MONTH(d) FROM a.b", Func::Month),
            ("SELECT DAY(d) FROM a.b", Func::Day),
            ("SELECT dayofweek(d) FROM a.b", Func::DayOfWeek),
            ("SELECT HOUR(d) FROM a.b", Func::Hour),
            ("SELECT MINUTE(d) FROM a.b", Func::Minute),
            ("SELECT SECOND(d) FROM a.b", Func::Second),
            ("SELECT OFFSET_UTC(d, 2) FROM a.b", Func::OffsetUtc),
        ] {
            let Plan::Select(s) = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}")) else {
                panic!("{sql}")
            };
            let SelectItem::Expr {
                expr: Expr::Func(f, _),
                ..
            } = &s.items[0]
            else {
                panic!("{sql}: {:?}", s.items[0])
            };
            assert_eq!(*f, want, "{sql}");
        }
        for sql in [
            "SELECT GROUP_CONCAT(name) FROM a.b",
            "SELECT GROUP_CONCAT(DISTINCT name) FROM a.b GROUP BY c",
        ] {
            let Plan::Select(s) = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}")) else {
                panic!("{sql}")
            };
            assert!(
                matches!(
                    &s.items[0],
                    SelectItem::Expr {
                        expr: Expr::Agg {
                            agg: Agg::GroupConcat,
                            ..
                        },
                        ..
                    }
                ),
                "{sql}"
            );
        }
        for (sql, word) in [
            ("SELECT YEAR(d, 1) FROM a.b", "YEAR takes 1 arguments"),
            (
                "SELECT REGEXP_LIKE(name) FROM a.b",
                "REGEXP_LIKE takes 2 to 3 arguments, not 1",
            ),
        ] {
            let e = parse(sql).unwrap_err();
            assert!(e.message().contains(word), "{sql}: {}", e.message());
        }
    }

    #[test]
    fn harpers_parser_refuses_not_regexp_rlike_regexp_calls_and_full_join_without_outer() {
        for (sql, ctx) in [
            (
                "SELECT name FROM shop.customers WHERE name NOT REGEXP '^A'",
                "...mers WHERE name NOT REGEXP '^A'",
            ),
            (
                "SELECT name FROM shop.customers WHERE name RLIKE '^A'",
                "...ustomers WHERE name RLIKE '^A'",
            ),
            (
                "SELECT name FROM shop.customers WHERE REGEXP(name, '^A')",
                "...hop.customers WHERE REGEXP(name, '^A')",
            ),
            (
                "SELECT o.id FROM shop.orders o FULL JOIN shop.customers c ON o.customer_id = c.id",
                "... shop.orders o FULL JOIN shop.customers ",
            ),
        ] {
            let e = parse(sql).unwrap_err();
            assert_eq!(e.status, 400, "{sql}");
            assert_eq!(e.message(), format!("Invalid SQL at: {ctx}. {PARSE_HINT}"));
        }
        // The same words elsewhere are fine: a string, a column named full, FULL OUTER JOIN.
        for sql in [
            "SELECT name FROM a.b WHERE name = 'NOT REGEXP x'",
            "SELECT full FROM a.b",
            "SELECT b.id FROM a.b FULL OUTER JOIN a.c ON b.id = c.id",
            "SELECT name REGEXP '^A' AS m FROM a.b",
        ] {
            assert!(parse(sql).is_ok(), "{sql}: {:?}", parse(sql));
        }
    }

    fn first_item(sql: &str) -> Expr {
        let Ok(Plan::Select(s)) = parse(sql) else {
            panic!("{sql}: {:?}", parse(sql))
        };
        match &s.items[0] {
            SelectItem::Expr { expr, .. } => expr.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regexp_literal_patterns_are_compiled_once_into_the_plan() {
        for sql in [
            "SELECT name REGEXP 'a+' FROM a.b",
            "SELECT REGEXP_LIKE(name, 'a+', 'i') FROM a.b",
        ] {
            let Expr::Regexp { compiled, .. } = first_item(sql) else {
                panic!("{sql}")
            };
            assert!(compiled.is_some(), "{sql}");
        }
        // A pattern from a column is compiled per row.
        let Expr::Regexp { compiled, .. } = first_item("SELECT name REGEXP pat FROM a.b") else {
            panic!()
        };
        assert!(compiled.is_none());
        // Bad patterns and flags are refused before any row is read, naming them.
        let e = parse("SELECT name REGEXP '(' FROM a.b").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message().contains("'('"), "{}", e.message());
        let e = parse("SELECT REGEXP_LIKE(name, 'a', 'x') FROM a.b").unwrap_err();
        assert!(e.message().contains("flag 'x'"), "{}", e.message());
        let long = "a".repeat(5000);
        let e = parse(&format!("SELECT name REGEXP '{long}' FROM a.b")).unwrap_err();
        assert!(e.message().contains("longer than"), "{}", e.message());
    }

    #[test]
    fn convert_reads_the_type_first_with_sizes_and_styles() {
        for (sql, want_to, want_style) in [
            ("SELECT CONVERT(INT, price) FROM a.b", ConvertTo::Int, None),
            (
                "SELECT CONVERT(VARCHAR(3), name) FROM a.b",
                ConvertTo::Text(Some(3)),
                None,
            ),
            (
                "SELECT CONVERT(STRING, signup, 110) FROM a.b",
                ConvertTo::Text(None),
                Some(110),
            ),
            (
                "SELECT CONVERT(DECIMAL(10,2), price) FROM a.b",
                ConvertTo::Number(Some(10), Some(2)),
                None,
            ),
            (
                "SELECT CONVERT(MONEY, price) FROM a.b",
                ConvertTo::Money,
                None,
            ),
            (
                "SELECT CONVERT(DATETIME, d) FROM a.b",
                ConvertTo::DateTime,
                None,
            ),
            // Harper reads the first argument as the type: `INT` here is a column.
            (
                "SELECT CONVERT(price, INT) FROM a.b",
                ConvertTo::Unknown("PRICE".into()),
                None,
            ),
        ] {
            let Expr::Convert { to, style, .. } = first_item(sql) else {
                panic!("{sql}")
            };
            assert_eq!((to, style), (want_to, want_style), "{sql}");
        }
        let e = parse("SELECT CONVERT(STRING, d, 999) FROM a.b").unwrap_err();
        assert!(
            e.message()
                .starts_with("CONVERT style 999 is not supported"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn right_full_cross_and_comma_joins_parse() {
        for (sql, kinds) in [
            (
                "SELECT * FROM a.b RIGHT JOIN a.c ON b.id = c.id",
                vec![JoinKind::Right],
            ),
            (
                "SELECT * FROM a.b RIGHT OUTER JOIN a.c ON b.id = c.id",
                vec![JoinKind::Right],
            ),
            (
                "SELECT * FROM a.b FULL OUTER JOIN a.c ON b.id = c.id",
                vec![JoinKind::Full],
            ),
            ("SELECT * FROM a.b CROSS JOIN a.c", vec![JoinKind::Inner]),
            (
                "SELECT * FROM a.b, a.c, a.d LEFT JOIN a.e ON e.x = d.x",
                vec![JoinKind::Inner, JoinKind::Inner, JoinKind::Left],
            ),
        ] {
            let Ok(Plan::Select(s)) = parse(sql) else {
                panic!("{sql}")
            };
            let got: Vec<JoinKind> = s.joins.iter().map(|j| j.kind).collect();
            assert_eq!(got, kinds, "{sql}");
        }
    }
}
