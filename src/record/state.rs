//! `rollgate/state.json`: the journal folded into what deploys and `status`
//! need per host, so neither reads the whole history.
//!
//! It is derived, never the source of truth: it records how far into which
//! journal file it has folded (sealed segments by length, the active one by
//! inode, offset and its last bytes), and every reader first folds whatever
//! was appended since. A missing, unreadable or stale state (a journal that
//! shrank, was replaced or edited) is rebuilt from the journal. It is written
//! atomically (temp file, fsync, rename) by anyone who folded something
//! new; as every copy is a fold of a prefix of the same journal, an older
//! copy replacing a newer one only costs the next reader a longer catch-up.
//! (A hand edit of the journal that keeps its length, inode, first and last
//! bytes goes unnoticed: delete `state.json` after editing the journal.)

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::record::journal::{Action, Event, Outcome};
use crate::record::segment::{self, Segment};

const FILE: &str = "state.json";
const FORMAT: u32 = 1;
/// Unreadable lines remembered by place; past this only counted.
const UNREADABLE_KEPT: usize = 100;
/// How many of the first and of the last folded bytes of the active segment
/// are kept to notice a journal replaced or rewritten behind the state's back.
const HEAD: usize = 64;
const TAIL: usize = 32;

/// What the journal says about every host, as of some point in it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    format: u32,
    /// Sealed segments folded whole: number -> length.
    done: BTreeMap<u32, u64>,
    /// How far into the segment after them (the active one, when this was
    /// written) the fold has gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<Cursor>,
    pub(crate) hosts: BTreeMap<String, HostHistory>,
    /// The newest run that started and has not ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) open: Option<OpenRun>,
    /// Journal lines that could not be read (oldest first, the first
    /// `UNREADABLE_KEPT` of them), and how many there are in all.
    unreadable: Vec<Unreadable>,
    unreadable_total: u64,
    /// A last line without its newline in the active segment: not folded
    /// (it is finished or fenced off by the next append), only reported.
    #[serde(skip)]
    torn: Option<Unreadable>,
    /// The active segment's number when this was loaded, for names.
    #[serde(skip)]
    active: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    segment: u32,
    ino: u64,
    offset: u64,
    lines: u64,
    /// The file's first bytes and the last folded ones.
    head: Vec<u8>,
    tail: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Unreadable {
    segment: u32,
    line: u64,
}

/// A revision a host ran fine, as the journal recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Good {
    pub(crate) rev: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HostHistory {
    /// Boxed: a B-tree node holds room for 11 entries inline, and most
    /// hosts run one or two services; unboxed, every host paid about 3 KB
    /// for room it never used (64.8 MB at 10,000 hosts).
    pub(crate) services: BTreeMap<String, Box<ServiceHistory>>,
    /// The host's newest good revision (any service) and the newest good
    /// one before it that differs: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    good: Option<Good>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Good>,
    /// A batch of this run included the host and nothing recorded the host
    /// since: its state is unknown if that run died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inflight: Option<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceHistory {
    /// The newest record of this host and service, whatever its result.
    pub(crate) newest: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_good: Option<Good>,
}

/// The part of a record `status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) run: String,
    pub(crate) time: String,
    pub(crate) action: Action,
    pub(crate) rev: String,
    pub(crate) group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    pub(crate) result: Outcome,
    pub(crate) who: String,
    /// Failed while its dead-man's switch was armed (issue 11): left to the
    /// host's armed revert when it could not be put back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) armed: bool,
    /// Put back within its group's failure budget in a run that went on and
    /// ended ok: the push landed without this host.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) left_behind: bool,
    /// Part of a run that deployed with `-o break-glass` (past failed checks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) break_glass: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenRun {
    pub(crate) run: String,
    /// Hosts its batches included.
    batched: Vec<String>,
    /// Host/service pairs it put back while going on (a failure budget).
    #[serde(default)]
    restored: Vec<(String, String)>,
    /// Host/service pairs that failed with their switch armed.
    #[serde(default)]
    armed: Vec<(String, String)>,
}

impl Step {
    fn of(r: &Line<'_>, group: Option<&str>) -> Step {
        Step {
            run: r.run.to_string(),
            time: r.time.to_string(),
            action: r.action,
            rev: r.rev.to_string(),
            group: group
                .or(r.group.as_ref().map(|g| g.as_str()))
                .unwrap_or_default()
                .to_string(),
            version: r.version.as_ref().map(Text::to_string),
            from: r.from.as_ref().map(Text::to_string),
            result: r.result,
            who: r.who.to_string(),
            armed: false,
            left_behind: false,
            break_glass: r.break_glass.is_some(),
        }
    }
}

impl History {
    /// The last revision that went through fine on `host`/`service`: what
    /// a failed host is restored to, and what `plan` diffs against.
    pub(crate) fn last_good(&self, host: &str, service: &str) -> Option<&Good> {
        self.hosts
            .get(host)?
            .services
            .get(service)?
            .last_good
            .as_ref()
    }

    /// The good revision a host had before its current one (all services of
    /// a group are deployed together, so the host's newest record decides).
    pub(crate) fn previous_good_host(&self, host: &str) -> Option<&Good> {
        self.hosts.get(host)?.previous.as_ref()
    }

    /// Journal lines that could not be read: `(file, line)`, and how many
    /// more there are beyond those listed. While a deploy holds the lock, a
    /// last line without its newline may be a write in progress: `live`
    /// leaves it out.
    pub(crate) fn unreadable(&self, live: bool) -> (Vec<(String, u64)>, u64) {
        let mut list: Vec<(String, u64)> = self
            .unreadable
            .iter()
            .chain(self.torn.iter().filter(|_| !live))
            .map(|u| (segment::name(u.segment, self.active), u.line))
            .collect();
        list.dedup();
        let more = self.unreadable_total - self.unreadable.len() as u64;
        (list, more)
    }

    /// Folds one record in; the order of records is the journal's.
    fn apply(&mut self, r: &Line<'_>) {
        match r.event {
            Event::Start => {
                self.open = Some(OpenRun {
                    run: r.run.to_string(),
                    batched: Vec::new(),
                    restored: Vec::new(),
                    armed: Vec::new(),
                });
            }
            Event::Batch => {
                for entry in &r.hosts {
                    let entry = entry.as_str();
                    let (group, host) = entry.split_once('/').unwrap_or(("", entry));
                    let h = self.hosts.entry(host.to_string()).or_default();
                    h.inflight = Some(Step::of(r, Some(group)));
                    if let Some(open) = self.open.as_mut().filter(|o| o.run == r.run.as_str()) {
                        open.batched.push(host.to_string());
                    }
                }
            }
            Event::Host => {
                let (Some(host), Some(service)) = (&r.host, &r.service) else {
                    return;
                };
                let (host, service) = (host.as_str(), service.as_str());
                let h = self.hosts.entry(host.to_string()).or_default();
                // Whatever ran, the host's state is known again.
                h.inflight = None;
                let good = (r.result == Outcome::Ok).then(|| Good {
                    rev: r.rev.to_string(),
                });
                let mut step = Step::of(r, None);
                if let Some(open) = self.open.as_mut().filter(|o| o.run == r.run.as_str()) {
                    let pair = (host.to_string(), service.to_string());
                    if r.armed && !open.armed.contains(&pair) {
                        open.armed.push(pair.clone());
                    }
                    step.armed = r.result == Outcome::Failed && open.armed.contains(&pair);
                    if r.action == Action::Restore && r.result == Outcome::Ok {
                        open.restored.push(pair);
                    }
                }
                match h.services.get_mut(service) {
                    Some(s) => {
                        s.newest = step;
                        if good.is_some() {
                            s.last_good.clone_from(&good);
                        }
                    }
                    None => {
                        h.services.insert(
                            service.to_string(),
                            Box::new(ServiceHistory {
                                newest: step,
                                last_good: good.clone(),
                            }),
                        );
                    }
                }
                if let Some(good) = good {
                    match &h.good {
                        Some(now) if now.rev != good.rev => {
                            h.previous = h.good.replace(good);
                        }
                        Some(_) => {}
                        None => h.good = Some(good),
                    }
                }
            }
            Event::End => {
                if let Some(open) = self.open.take_if(|o| o.run == r.run.as_str()) {
                    // Put back in a run that still ended ok: left behind.
                    if r.result == Outcome::Ok {
                        for (host, service) in &open.restored {
                            let newest = self
                                .hosts
                                .get_mut(host)
                                .and_then(|h| h.services.get_mut(service))
                                .map(|s| &mut s.newest)
                                .filter(|n| n.run == open.run && n.action == Action::Restore);
                            if let Some(n) = newest {
                                n.left_behind = true;
                            }
                        }
                    }
                    for host in open.batched {
                        if let Some(h) = self.hosts.get_mut(&host) {
                            h.inflight.take_if(|s| s.run == r.run.as_str());
                        }
                    }
                }
            }
        }
    }

    /// Folds a record as if read from the journal.
    #[cfg(test)]
    pub(crate) fn apply_record(&mut self, r: &crate::record::journal::Record) {
        let line = serde_json::to_vec(r).unwrap();
        self.apply(&serde_json::from_slice(&line).unwrap());
    }

    fn note_unreadable(&mut self, segment: u32, line: u64) {
        self.unreadable_total += 1;
        if self.unreadable.len() < UNREADABLE_KEPT {
            self.unreadable.push(Unreadable { segment, line });
        }
    }
}

/// A journal line as the fold reads it: a [`Record`]'s fields, borrowed
/// from the line wherever they need no unescaping (a rebuild reads millions
/// of lines). What is not a `Record` is not a `Line` either, so `status` and
/// `log` agree on which lines are unreadable.
///
/// [`Record`]: crate::record::journal::Record
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    run: Text<'a>,
    #[serde(borrow)]
    time: Text<'a>,
    event: Event,
    action: Action,
    #[serde(borrow)]
    rev: Text<'a>,
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    host: Option<Text<'a>>,
    #[serde(borrow, default)]
    service: Option<Text<'a>>,
    #[serde(borrow, default)]
    version: Option<Text<'a>>,
    #[serde(borrow, default)]
    from: Option<Text<'a>>,
    result: Outcome,
    #[serde(borrow)]
    who: Text<'a>,
    #[serde(default)]
    armed: bool,
    #[serde(borrow, default, rename = "options")]
    _options: Vec<Text<'a>>,
    #[serde(borrow, default)]
    hosts: Vec<Text<'a>>,
    #[serde(default, rename = "duration_ms")]
    _duration_ms: Option<u64>,
    #[serde(borrow, default, rename = "error")]
    _error: Option<Text<'a>>,
    #[serde(default)]
    break_glass: Option<serde::de::IgnoredAny>,
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The history as of the journal's end. Saves what it folded anew, if it
/// can (a reader without write access just folds again next time).
pub(crate) fn load(dir: &Path) -> Result<History> {
    let path = dir.join(FILE);
    let saved = fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<History>(&b).ok())
        .filter(|h| h.format == FORMAT);
    let before = saved.as_ref().map(|h| (h.done.clone(), h.cursor.clone()));
    let history = match saved {
        Some(h) => match catch_up(h, dir)? {
            Some(h) => h,
            None => rebuild(dir)?,
        },
        None => rebuild(dir)?,
    };
    if before != Some((history.done.clone(), history.cursor.clone())) {
        let _ = save(dir, &history);
    }
    Ok(history)
}

/// The history folded from the journal's first line.
pub(crate) fn rebuild(dir: &Path) -> Result<History> {
    let fresh = History {
        format: FORMAT,
        ..History::default()
    };
    Ok(catch_up(fresh, dir)?.expect("an empty history is a prefix of any journal"))
}

/// Folds what was appended since `h` was written; `None` if `h` is not a
/// fold of a prefix of the journal as it is now.
fn catch_up(mut h: History, dir: &Path) -> Result<Option<History>> {
    let sealed = segment::sealed(dir)?;
    for (number, len) in &h.done {
        if !sealed.iter().any(|s| s.number == *number && s.len == *len) {
            return Ok(None);
        }
    }
    let last_done = h.done.keys().next_back().copied();
    for s in &sealed {
        if h.done.contains_key(&s.number) {
            continue;
        }
        if last_done.is_some_and(|d| s.number < d) {
            return Ok(None);
        }
        let Some(from) = resume(&h, s)? else {
            return Ok(None);
        };
        fold_file(&mut h, s, from, true)?;
        h.done.insert(s.number, s.len);
    }
    h.active = segment::active_number(&sealed);
    match segment::active(dir, &sealed)? {
        Some(active) => {
            let Some(from) = resume(&h, &active)? else {
                return Ok(None);
            };
            fold_file(&mut h, &active, from, false)?;
        }
        None if h.cursor.as_ref().is_some_and(|c| c.offset > 0) => return Ok(None),
        None => h.cursor = None,
    }
    Ok(Some(h))
}

/// Where to start folding `s`: `(offset, lines before it)`, or `None` if
/// the cursor says this file is not what was folded.
fn resume(h: &History, s: &Segment) -> Result<Option<(u64, u64)>> {
    let Some(c) = h.cursor.as_ref().filter(|c| c.offset > 0) else {
        return Ok(Some((0, 0)));
    };
    if c.segment != s.number || c.ino != s.ino || s.len < c.offset {
        return Ok(None);
    }
    let file = File::open(&s.path)
        .with_context(|| format!("cannot read the journal {}", s.path.display()))?;
    let same = |want: &[u8], at: u64| {
        let mut got = vec![0; want.len()];
        file.read_exact_at(&mut got, at).is_ok() && got == want
    };
    if !same(&c.head, 0) || !same(&c.tail, c.offset - c.tail.len() as u64) {
        return Ok(None);
    }
    Ok(Some((c.offset, c.lines)))
}

/// Folds the whole lines of `s` from `from`. In the active segment a last
/// line without its newline is left for later (noted as torn); in a sealed
/// one it is a line like any other (and unreadable).
fn fold_file(h: &mut History, s: &Segment, from: (u64, u64), sealed: bool) -> Result<()> {
    let (mut offset, mut lines) = from;
    let (mut head, mut tail) = match &h.cursor {
        Some(c) if c.offset == offset && offset > 0 => (c.head.clone(), c.tail.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let mut file = File::open(&s.path)
        .with_context(|| format!("cannot read the journal {}", s.path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .with_context(|| format!("cannot read the journal {}", s.path.display()))?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut line = Vec::new();
    h.torn = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read the journal {}", s.path.display()))?;
        if n == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        if !whole && !sealed {
            h.torn = Some(Unreadable {
                segment: s.number,
                line: lines + 1,
            });
            break;
        }
        if offset == 0 {
            head.extend_from_slice(&line[..line.len().min(HEAD)]);
        }
        offset += n as u64;
        lines += 1;
        tail.clear();
        tail.extend_from_slice(&line[line.len().saturating_sub(TAIL)..]);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line<'_>>(&line) {
            Ok(r) => h.apply(&r),
            Err(_) => h.note_unreadable(s.number, lines),
        }
    }
    h.cursor = (!sealed).then_some(Cursor {
        segment: s.number,
        ino: s.ino,
        offset,
        lines,
        head,
        tail,
    });
    Ok(())
}

/// Writes the state atomically: a temp file beside it, synced, renamed over.
fn save(dir: &Path, h: &History) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    let mut out = std::io::BufWriter::new(tmp.as_file_mut());
    serde_json::to_writer(&mut out, h)?;
    out.flush()?;
    drop(out);
    // Readable like the journal it is derived from.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_data()?;
    tmp.persist(dir.join(FILE))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::journal::tests::host_record;
    use crate::record::journal::{Journal, Record, Recorder, dir_of, read};

    /// One whole run: start, batch, one host record per host, end.
    fn run(git_dir: &Path, id: &str, rev: &str, hosts: &[&str]) {
        let rec = Recorder {
            run: id.into(),
            who: "tester".into(),
            options: vec![],
            break_glass: None,
        };
        let mut j = Journal::open(git_dir).unwrap();
        let mut start = rec.record(Event::Start, Action::Deploy, rev, Outcome::Started);
        start.hosts = hosts.iter().map(|h| format!("canary/{h}")).collect();
        let mut batch = start.clone();
        batch.event = Event::Batch;
        j.append(&[start, batch]).unwrap();
        let steps: Vec<Record> = hosts
            .iter()
            .map(|h| host_record(id, h, rev, Outcome::Ok))
            .collect();
        j.append(&steps).unwrap();
        j.append(&[rec.record(Event::End, Action::Deploy, rev, Outcome::Ok)])
            .unwrap();
    }

    fn tear(git_dir: &Path) {
        let path = dir_of(git_dir).join(segment::ACTIVE);
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(br#"{"run":"torn","#).unwrap();
    }

    #[test]
    fn the_state_kept_run_by_run_equals_a_fold_of_the_whole_journal() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path();
        let rollgate = dir_of(git_dir);
        for i in 0..120 {
            run(git_dir, &format!("r{i}"), &format!("rev{i}"), &["h1", "h2"]);
            if i % 40 == 7 {
                tear(git_dir);
            }
        }
        assert!(
            rollgate.join("journal/000002.jsonl").exists(),
            "the test should cross segments"
        );
        let kept = read(git_dir).unwrap();
        let rebuilt = rebuild(&rollgate).unwrap();
        assert_eq!(kept, rebuilt);
        assert_eq!(kept.last_good("h2", "sshd").unwrap().rev, "rev119");
        assert_eq!(kept.previous_good_host("h2").unwrap().rev, "rev118");
        assert_eq!(kept.unreadable_total, 3);
        assert!(kept.open.is_none());

        // Missing or corrupt: rebuilt, and the same.
        fs::remove_file(rollgate.join(FILE)).unwrap();
        assert_eq!(read(git_dir).unwrap(), rebuilt);
        fs::write(rollgate.join(FILE), b"{\"format\":1,\"done\":").unwrap();
        assert_eq!(read(git_dir).unwrap(), rebuilt);
        let on_disk: History =
            serde_json::from_slice(&fs::read(rollgate.join(FILE)).unwrap()).unwrap();
        assert_eq!(on_disk.hosts, rebuilt.hosts);
    }

    #[test]
    fn an_older_copy_of_the_state_is_caught_up_across_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path();
        let rollgate = dir_of(git_dir);
        run(git_dir, "r0", "rev0", &["h1"]);
        let old = fs::read(rollgate.join(FILE)).unwrap();
        let mut i = 1;
        while !rollgate.join("journal/000002.jsonl").exists() {
            run(git_dir, &format!("r{i}"), &format!("rev{i}"), &["h1"]);
            i += 1;
        }
        // As if a slow `status` renamed its older fold over the newer one.
        fs::write(rollgate.join(FILE), &old).unwrap();
        let h = read(git_dir).unwrap();
        assert_eq!(h, rebuild(&rollgate).unwrap());
        assert_eq!(
            h.last_good("h1", "sshd").unwrap().rev,
            format!("rev{}", i - 1)
        );
    }

    #[test]
    fn a_state_that_does_not_match_the_journal_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path();
        let rollgate = dir_of(git_dir);
        run(git_dir, "r0", "aaaa", &["h1"]);
        run(git_dir, "r1", "bbbb", &["h1"]);
        let state = fs::read(rollgate.join(FILE)).unwrap();
        // The journal replaced by another of the same length (the file
        // system may well reuse the inode).
        let text = fs::read_to_string(rollgate.join(segment::ACTIVE)).unwrap();
        fs::remove_file(rollgate.join(segment::ACTIVE)).unwrap();
        let other = text.replace("\"r0\"", "\"x0\"").replace("bbbb", "cccc");
        fs::write(rollgate.join(segment::ACTIVE), other).unwrap();
        fs::write(rollgate.join(FILE), &state).unwrap();
        assert_eq!(
            read(git_dir).unwrap().last_good("h1", "sshd").unwrap().rev,
            "cccc"
        );
        // ...and one cut short.
        fs::write(rollgate.join(segment::ACTIVE), text.lines().next().unwrap()).unwrap();
        let h = read(git_dir).unwrap();
        assert!(h.last_good("h1", "sshd").is_none());
        assert_eq!(h, rebuild(&rollgate).unwrap());
    }

    #[test]
    fn an_old_journal_without_segments_or_state_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path();
        let rollgate = dir_of(git_dir);
        fs::create_dir_all(&rollgate).unwrap();
        // Written as an older rollgate did: one file, no state.
        let mut text = String::new();
        let mut n = 0;
        while (text.len() as u64) < segment::SEGMENT_BYTES {
            let r = host_record(&format!("r{n}"), "h1", &format!("rev{n}"), Outcome::Ok);
            text += &serde_json::to_string(&r).unwrap();
            text.push('\n');
            n += 1;
        }
        fs::write(rollgate.join(segment::ACTIVE), &text).unwrap();
        let h = read(git_dir).unwrap();
        assert_eq!(
            h.last_good("h1", "sshd").unwrap().rev,
            format!("rev{}", n - 1)
        );
        run(git_dir, "new", "newrev", &["h1"]);
        assert_eq!(
            fs::read_to_string(rollgate.join("journal/000001.jsonl")).unwrap(),
            text
        );
        let h = read(git_dir).unwrap();
        assert_eq!(h.last_good("h1", "sshd").unwrap().rev, "newrev");
        assert_eq!(
            h.previous_good_host("h1").unwrap().rev,
            format!("rev{}", n - 1)
        );
        assert_eq!(h, rebuild(&rollgate).unwrap());
    }

    #[test]
    fn previous_good_host_skips_failures_and_the_current_revision() {
        let mut h = History::default();
        for (run, rev, result) in [
            ("r1", "aaa", Outcome::Ok),
            ("r2", "bbb", Outcome::Ok),
            ("r3", "ccc", Outcome::Failed),
            ("r4", "bbb", Outcome::Ok),
        ] {
            h.apply_record(&host_record(run, "h1", rev, result));
        }
        assert_eq!(h.last_good("h1", "sshd").unwrap().rev, "bbb");
        assert_eq!(h.previous_good_host("h1").unwrap().rev, "aaa");
        assert!(h.last_good("h2", "sshd").is_none());
        h.apply_record(&host_record("r5", "h1", "aaa", Outcome::Ok));
        assert_eq!(h.previous_good_host("h1").unwrap().rev, "bbb");
    }
}
