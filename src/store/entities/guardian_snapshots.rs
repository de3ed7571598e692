//! The status the guardian computed at one tick (an encoded `runwarden.v1.GuardianStatus`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "guardian_snapshots")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at_us: i64,
    pub status: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
