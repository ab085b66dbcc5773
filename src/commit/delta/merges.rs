//! Merges committed to the aggregated table itself: a merge is one commit adding its files
//! and setting the group's merge transaction (`pageview/<group>/<topic>/merged`, version =
//! the end of the last window merged). Two mergers from the same point both set it, so
//! delta-rs lets exactly one of them commit (docs/EXACTLY_ONCE.md, "One row per window"); a
//! loser's files were never in the table, and no reader sees them.

use std::cell::RefCell;

use deltalake::kernel::Transaction;

use super::{Tables, lost_to_another};
use crate::commit::CommitError;
use crate::commit::merge::Plan;
use crate::commit::merger::{MergeLog, Merger};
use crate::record::EventMs;
use crate::sink::{Dataset, Finished, WrittenFile};

/// The aggregated table's log, as the commit point of a group's merges.
pub struct TableMerges<'a> {
    tables: RefCell<&'a mut Tables>,
    app: String,
}

impl<'a> TableMerges<'a> {
    pub fn new(tables: &'a mut Tables, group: &str, topic: &str) -> Self {
        TableMerges {
            tables: RefCell::new(tables),
            app: merge_app(group, topic),
        }
    }
}

/// The aggregated table's transaction whose version says how far `group`'s rows of `topic`
/// are merged.
pub fn merge_app(group: &str, topic: &str) -> String {
    format!("pageview/{group}/{topic}/merged")
}

impl MergeLog for TableMerges<'_> {
    fn merged_to(&self, _: &Merger) -> Result<EventMs, CommitError> {
        let mut tables = self.tables.borrow_mut();
        tables.refresh(Dataset::Aggregated)?;
        Ok(tables.txn(Dataset::Aggregated, &self.app)?.unwrap_or(0))
    }

    fn commit(&self, _: &Merger, plan: Plan, files: Vec<Finished>) -> Result<bool, CommitError> {
        let written = files
            .into_iter()
            .map(Finished::publish)
            .collect::<Result<Vec<WrittenFile>, _>>()?;
        let txn = Transaction::new(&self.app, plan.to);
        let mut tables = self.tables.borrow_mut();
        match tables.append(Dataset::Aggregated, &written, vec![txn], None) {
            Ok(()) => Ok(true),
            Err(e) if lost_to_another(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::commit::delta::TableRoot;
    use crate::commit::merge;
    use crate::commit::merger::tests::{closed, output};
    use crate::storage::{Buckets, LocalStorage, Storage};
    use crate::window::{ClosedWindow, WindowSpec};

    const T0: i64 = 1_700_000_040_000;

    #[test]
    fn of_two_processors_merging_the_same_windows_at_once_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let spec = WindowSpec::new(60_000);
        let merger = Merger::new(storage.clone(), "cp", "g", "t", spec, output());
        closed(&storage, &merger, &[ClosedWindow::minute(T0, &[("E1", 2)])]);
        let buckets = Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into());
        let open = || Tables::open(TableRoot::Folder(dir.path()), &buckets).unwrap();
        let (mut a_tables, mut b_tables) = (open(), open());
        let (a, b) = (
            TableMerges::new(&mut a_tables, "g", "t"),
            TableMerges::new(&mut b_tables, "g", "t"),
        );
        assert_eq!(a.merged_to(&merger).unwrap(), 0);
        assert_eq!(b.merged_to(&merger).unwrap(), 0);
        let partials = merger.published().unwrap();
        let plan = merge::plan(0, Some(T0 + 60_000), spec, &partials).unwrap();
        let files = |plan| merger.write(plan).unwrap().unwrap();
        let (a_files, b_files) = (files(&plan), files(&plan));
        assert!(a.commit(&merger, plan.clone(), a_files).unwrap());
        assert!(
            !b.commit(&merger, plan, b_files).unwrap(),
            "one commit per merge"
        );
        assert_eq!(b.merged_to(&merger).unwrap(), T0 + 60_000);
        let table = &b.tables.borrow().tables[Dataset::Aggregated.index()].table;
        assert_eq!(table.version(), Some(1), "created, then merged once");
    }
}
