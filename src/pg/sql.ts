import pg from 'pg';

/** SQL text helpers: identifiers are always quoted, literals always escaped (values are bound as parameters where the protocol allows). */
export const quoteIdent = pg.escapeIdentifier;
export const quoteLiteral = pg.escapeLiteral;

/** `"schema"."name"`. */
export const qualify = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`;

/** A relation as the catalog names it. */
export interface RelationName {
  schema: string;
  name: string;
}

/** The key of a table in counts maps and plans: schema and name, each quoted as SQL would. */
export const tableKey = (schema: string, name: string): string => qualify(schema, name);
