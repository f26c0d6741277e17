//! Reading a submit description into its commands and its `queue` statement.
//!
//! HTCondor's syntax, as far as the commands we translate need it: one `name = value`
//! per line (names case-insensitive, `+Attr` and `MY.Attr` set job attributes), `#`
//! comments, a trailing `\` continues a line, and `queue` ends the description. Values
//! stay raw text here; [`super::value`] reads arguments, environments and sizes, and
//! [`super::translate`] expands macros. Nothing is dropped: every line this module cannot
//! read becomes a [`Warning`] with its line number.

use std::fmt;

use super::SubmitError;

/// One `name = value` command of the description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// 1-based line number where the command starts.
    pub line: usize,
    /// The name in lower case; job attributes keep their `+` (`MY.Attr` is read as
    /// `+attr`).
    pub name: String,
    /// The name as written, for messages.
    pub written: String,
    /// The value, trimmed, continuation lines joined.
    pub value: String,
}

/// Where the items of `queue <vars> from|in ...` come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemSource {
    /// `from <file>`: one item per line of a file beside the submit file.
    File(String),
    /// `in (a b c)`: the items listed in the statement.
    List(Vec<String>),
}

/// The `queue` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    /// 1-based line number of the statement.
    pub line: usize,
    /// `queue N`: how many jobs (without items; 1 when absent).
    pub count: Option<u32>,
    /// The variables each item sets (`Item` when none is named).
    pub vars: Vec<String>,
    /// The items, when the statement has a list.
    pub items: Option<ItemSource>,
}

/// Something in the description that is not translated, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// What is not translated and what to do instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parsed submit description: its commands in order and its first `queue` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The commands before the `queue` statement, in file order.
    pub commands: Vec<Command>,
    /// The `queue` statement.
    pub queue: Queue,
    /// Lines that are neither a command nor the queue statement, and later `queue`
    /// statements.
    pub warnings: Vec<Warning>,
}

impl Description {
    /// The last command named `name` (lower case): as in HTCondor, a later command
    /// overrides an earlier one.
    pub fn get(&self, name: &str) -> Option<&Command> {
        self.commands.iter().rev().find(|c| c.name == name)
    }
}

/// Reads the submit description `text`.
pub fn parse(text: &str) -> Result<Description, SubmitError> {
    let mut commands = Vec::new();
    let mut warnings = Vec::new();
    let mut queue: Option<Queue> = None;
    for (line, statement) in logical_lines(text) {
        let trimmed = statement.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = queue_keyword(trimmed) {
            if queue.is_some() {
                warnings.push(Warning {
                    line,
                    message: "a second queue statement is not translated: one AnalysisJob \
                              is one cluster; split the file"
                        .to_owned(),
                });
            } else {
                queue = Some(parse_queue(line, rest)?);
            }
            continue;
        }
        if queue.is_some() {
            warnings.push(Warning {
                line,
                message: format!("`{trimmed}` after the queue statement is not translated"),
            });
            continue;
        }
        match trimmed.split_once('=') {
            Some((name, value)) if is_command_name(name.trim()) => {
                let written = name.trim().to_owned();
                commands.push(Command {
                    line,
                    name: normalise_name(&written),
                    written,
                    value: value.trim().to_owned(),
                });
            }
            _ => warnings.push(Warning {
                line,
                message: format!("`{trimmed}` is not a `name = value` command; ignored"),
            }),
        }
    }
    let queue = queue.ok_or(SubmitError::NoQueue)?;
    Ok(Description {
        commands,
        queue,
        warnings,
    })
}

/// The statements of `text` with the line each starts on; a trailing `\` joins the next
/// line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let (start, mut joined) = current.take().unwrap_or((number, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                current = Some((start, joined));
            }
            None => {
                joined.push_str(raw);
                out.push((start, joined));
            }
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

/// The rest of a `queue` statement, or `None` when the line is something else.
fn queue_keyword(line: &str) -> Option<&str> {
    let head = line.get(..5)?;
    if !head.eq_ignore_ascii_case("queue") {
        return None;
    }
    let rest = &line[5..];
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

fn is_command_name(name: &str) -> bool {
    let bare = name
        .strip_prefix('+')
        .or_else(|| {
            name.strip_prefix("MY.")
                .or_else(|| name.strip_prefix("my."))
        })
        .unwrap_or(name);
    !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn normalise_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.strip_prefix("my.") {
        Some(attribute) => format!("+{attribute}"),
        None => lower,
    }
}

/// Reads what follows `queue`: `[N]`, `[N] [vars] in (list)`, `[vars] from file`.
fn parse_queue(line: usize, rest: &str) -> Result<Queue, SubmitError> {
    let unsupported = |why: &str| SubmitError::UnsupportedQueue {
        line,
        message: why.to_owned(),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let keyword = words.iter().position(|w| {
        ["from", "in", "matching"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    });
    let Some(at) = keyword else {
        return match words.as_slice() {
            [] => Ok(Queue {
                line,
                count: None,
                vars: Vec::new(),
                items: None,
            }),
            [count] => {
                let count = count.parse::<u32>().map_err(|_| {
                    unsupported("`queue N` needs a whole number of jobs (macros in N are not read)")
                })?;
                if count == 0 {
                    return Err(unsupported("`queue 0` queues no job"));
                }
                Ok(Queue {
                    line,
                    count: Some(count),
                    vars: Vec::new(),
                    items: None,
                })
            }
            _ => Err(unsupported(
                "write `queue N`, `queue <vars> from <file>` or `queue <vars> in (<items>)`",
            )),
        };
    };
    let mut head: Vec<&str> = words[..at].to_vec();
    if head.first().is_some_and(|w| w.parse::<u32>().is_ok()) {
        return Err(unsupported(
            "`queue N <vars> from|in ...` (N jobs per item) is not supported: one shard \
             per item; remove N",
        ));
    }
    let vars: Vec<String> = head
        .drain(..)
        .flat_map(|w| w.split(','))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    let vars = if vars.is_empty() {
        vec!["Item".to_owned()]
    } else {
        vars
    };
    let keyword = words[at].to_ascii_lowercase();
    let tail = words[at + 1..].join(" ");
    if tail.starts_with('[') {
        return Err(unsupported(
            "slices (`[start:end]`) of an item list are not supported",
        ));
    }
    let items = match keyword.as_str() {
        "matching" => {
            return Err(unsupported(
                "`queue ... matching <glob>` is not supported: list the files in a file and \
                 use `queue <var> from <file>`",
            ));
        }
        "from" => {
            if tail.starts_with('(') {
                return Err(unsupported(
                    "an inline `from ( ... )` list is not supported: use `in (a b c)` or a file",
                ));
            }
            if tail.is_empty() {
                return Err(unsupported("`queue ... from` needs a file name"));
            }
            ItemSource::File(tail)
        }
        _ => {
            let list = tail
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(')'))
                .unwrap_or(&tail);
            let items: Vec<String> = list
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect();
            if items.is_empty() {
                return Err(unsupported("`queue ... in` needs at least one item"));
            }
            ItemSource::List(items)
        }
    };
    Ok(Queue {
        line,
        count: None,
        vars,
        items: Some(items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_their_line_and_later_ones_win() {
        let d = parse("# a job\nExecutable = /bin/a\n\nexecutable = /bin/b\nqueue\n").unwrap();
        assert_eq!(d.get("executable").unwrap().value, "/bin/b");
        assert_eq!(d.get("executable").unwrap().line, 4);
        assert_eq!(d.queue.count, None);
    }

    #[test]
    fn continuation_lines_are_joined_and_keep_the_first_line_number() {
        let d = parse("arguments = a \\\n  b \\\n  c\nqueue 3").unwrap();
        let a = d.get("arguments").unwrap();
        assert_eq!(a.line, 1);
        assert_eq!(
            a.value.split_whitespace().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(d.queue.count, Some(3));
    }

    #[test]
    fn my_attributes_are_plus_attributes() {
        let d = parse("MY.WantOS = \"el9\"\n+JobFlavour = \"espresso\"\nqueue").unwrap();
        assert!(d.get("+wantos").is_some());
        assert!(d.get("+jobflavour").is_some());
    }

    #[test]
    fn queue_forms() {
        let q = parse("queue file from files.txt").unwrap().queue;
        assert_eq!(q.vars, ["file"]);
        assert_eq!(q.items, Some(ItemSource::File("files.txt".into())));
        let q = parse("queue in (a b, c)").unwrap().queue;
        assert_eq!(q.vars, ["Item"]);
        assert_eq!(
            q.items,
            Some(ItemSource::List(vec!["a".into(), "b".into(), "c".into()]))
        );
        let q = parse("queue mass,width from points.csv").unwrap().queue;
        assert_eq!(q.vars, ["mass", "width"]);
    }

    #[test]
    fn unsupported_queue_forms_are_errors_with_their_line() {
        for text in [
            "x = 1\nqueue f matching *.root",
            "x = 1\nqueue 2 f from list",
            "x = 1\nqueue 0",
            "x = 1\nqueue f in [1:] (a b)",
        ] {
            match parse(text) {
                Err(SubmitError::UnsupportedQueue { line, .. }) => assert_eq!(line, 2, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_queue_is_an_error() {
        assert!(matches!(
            parse("executable = /bin/true"),
            Err(SubmitError::NoQueue)
        ));
    }

    #[test]
    fn stray_lines_and_second_queues_are_warnings() {
        let d = parse("this is not a command\nqueue 2\nqueue 3\n").unwrap();
        let lines: Vec<usize> = d.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 3]);
        assert_eq!(d.queue.count, Some(2));
    }
}
