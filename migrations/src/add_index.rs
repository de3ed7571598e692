//! A migration that adds one index, and drops it on the way down: the shape of most migrations
//! since the first release (a query the server runs inside a write transaction made a seek
//! instead of a read of the table). From 000014 on, such a migration is a constant of this type,
//! documented where it is declared; the earlier ones keep their own code, as released.

use sea_orm_migration::prelude::*;

/// Adds the index `index` on `table (columns…)`, in that column order.
pub struct AddIndex {
    /// The migration's name, as recorded in `seaql_migrations` (never changed once released).
    pub migration: &'static str,
    pub index: &'static str,
    pub table: &'static str,
    pub columns: &'static [&'static str],
}

impl MigrationName for AddIndex {
    fn name(&self) -> &str {
        self.migration
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut index = Index::create();
        index.name(self.index).table(Alias::new(self.table));
        for column in self.columns {
            index.col(Alias::new(*column));
        }
        manager.create_index(index).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(self.index).table(Alias::new(self.table)).to_owned()).await
    }
}
