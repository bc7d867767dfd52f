-- The whole schema cache as one json value. $1::text[] = exposed schemas.
WITH
exposed AS (
  SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY($1::text[])
),
user_ns AS (
  SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
    AND n.nspname NOT LIKE 'pg\_temp\_%'
),
api_roles AS (
  SELECT r.oid, r.rolname, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname IN ('anon', 'authenticated', 'service_role')
),
-- A domain's underlying type, through domains over domains.
domain_base AS (
  WITH RECURSIVE walk(oid, base) AS (
    SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
    UNION ALL
    SELECT w.oid, b.typbasetype FROM walk w JOIN pg_catalog.pg_type b ON b.oid = w.base AND b.typtype = 'd'
  )
  SELECT w.oid, w.base FROM walk w
  JOIN pg_catalog.pg_type b ON b.oid = w.base AND b.typtype <> 'd'
),
-- Types as SQL that casts a text parameter: no typmod, schema-qualified outside pg_catalog.
-- format_type(oid, -1), not (oid, NULL): with -1 it names the type so that it reparses
-- WITHOUT a default modifier (`bpchar`, `"bit"`), where NULL gives `character` = char(1).
types AS (
  SELECT t.oid,
    CASE
      WHEN tn.nspname = 'pg_catalog' THEN pg_catalog.format_type(t.oid, -1)
      WHEN t.typcategory = 'A' AND et.oid IS NOT NULL THEN
        CASE WHEN etn.nspname = 'pg_catalog' THEN pg_catalog.format_type(et.oid, -1)
             ELSE pg_catalog.quote_ident(etn.nspname) || '.' || pg_catalog.quote_ident(et.typname) END || '[]'
      ELSE pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.typname)
    END AS sql_type,
    -- The element type (the type itself unless an array), its name as above, and whether
    -- it lives in pg_catalog: what a column's modifier is rendered against.
    coalesce(et.oid, t.oid) AS elem_oid,
    CASE WHEN coalesce(etn.nspname, tn.nspname) = 'pg_catalog' THEN NULL
         ELSE pg_catalog.quote_ident(coalesce(etn.nspname, tn.nspname)) || '.'
              || pg_catalog.quote_ident(coalesce(et.typname, t.typname)) END AS elem_qualified,
    et.oid IS NOT NULL AS is_array,
    -- What filter values and RPC arguments are cast to: a domain's base type, because an
    -- explicit cast to a domain applies the domain's modifier by truncating
    -- ('GBPX'::currency_code = 'GBP' for a char(3) domain). Arrays of a domain keep their
    -- type: their text input checks each item whole, and `=` needs the same array type.
    coalesce(db.base, t.oid) AS cast_oid,
    coalesce(bt.typname, t.typname)::text AS base_name,
    t.typcategory::text AS category,
    t.typrelid,
    -- A domain named like a media type (`text/html`, `*/*`): its functions are media type
    -- handlers (PostgREST 12).
    CASE WHEN t.typtype = 'd' AND (t.typname ~* '^[A-Za-z0-9.-]+/[A-Za-z0-9.\+-]+$' OR t.typname = '*/*')
         THEN t.typname::text END AS media_type
  FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
  LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
  LEFT JOIN pg_catalog.pg_namespace etn ON etn.oid = et.typnamespace
  LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype AND t.typtype = 'd'
  LEFT JOIN domain_base db ON db.oid = t.oid
),
rels AS (
  SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind,
    pg_catalog.pg_relation_is_updatable(c.oid::regclass, true) AS upd,
    pg_catalog.obj_description(c.oid, 'pg_class') AS comment, c.relrowsecurity
  FROM pg_catalog.pg_class c JOIN exposed n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND NOT c.relispartition
),
columns AS (
  SELECT a.attrelid,
    pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', a.attname,
      -- Writes cast to the declared type WITH its modifier (char(3), numeric(12,2),
      -- vector(384)...), so the value is checked, never truncated or padded to char(1).
      'type', CASE
        WHEN a.atttypmod < 0 THEN ty.sql_type
        WHEN ty.elem_qualified IS NULL THEN pg_catalog.format_type(a.atttypid, a.atttypmod)
        ELSE ty.elem_qualified
             || pg_catalog.substr(pg_catalog.format_type(ty.elem_oid, a.atttypmod),
                                  pg_catalog.length(pg_catalog.format_type(ty.elem_oid, NULL)) + 1)
             || CASE WHEN ty.is_array THEN '[]' ELSE '' END
      END,
      -- Filters cast to the type without modifier: `varchar(2) = 'abc'` must not match 'ab'.
      'cast_type', ct.sql_type,
      'data_type', pg_catalog.format_type(a.atttypid, a.atttypmod),
      'base_type', ty.base_name,
      'category', ty.category,
      'nullable', NOT a.attnotnull,
      -- An identity column's default is its sequence (for Prefer: missing=default).
      'default', coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid),
        CASE WHEN a.attidentity = 'd' THEN 'nextval(' || pg_catalog.quote_literal(
          pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(r.schema) || '.' || pg_catalog.quote_ident(r.name), a.attname)) || '::regclass)' END),
      'generated', a.attgenerated <> '' OR a.attidentity = 'a',
      'position', a.attnum,
      'comment', pg_catalog.col_description(a.attrelid, a.attnum),
      'enum', (SELECT pg_catalog.json_agg(e.enumlabel ORDER BY e.enumsortorder)
               FROM pg_catalog.pg_enum e WHERE e.enumtypid = a.atttypid),
      -- An enum type's comment: /graphql/v1 reads pg_graphql's `name`/`mappings` directives.
      'enum_comment', CASE WHEN ty.category = 'E'
        THEN pg_catalog.obj_description(a.atttypid, 'pg_type') END
    ) ORDER BY a.attnum) AS cols
  FROM pg_catalog.pg_attribute a
  JOIN rels r ON r.oid = a.attrelid
  JOIN types ty ON ty.oid = a.atttypid
  JOIN types ct ON ct.oid = ty.cast_oid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped
  GROUP BY a.attrelid
),
-- Unique keys (constraints and plain unique indexes) of every user table.
keys AS (
  SELECT i.indrelid AS relid, i.indisprimary AS is_primary,
    (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
       FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS cols
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
  JOIN user_ns n ON n.oid = c.relnamespace
  WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
),
fks AS (
  SELECT con.conname, sn.nspname AS schema, s.relname AS name, tn.nspname AS ref_schema, t.relname AS ref_name,
    -- /graphql/v1 reads pg_graphql's `local_name`/`foreign_name` directives from it.
    pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment,
    (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
       FROM pg_catalog.unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS cols,
    (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
       FROM pg_catalog.unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS ref_cols
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class s ON s.oid = con.conrelid
  JOIN user_ns sn ON sn.oid = s.relnamespace
  JOIN pg_catalog.pg_class t ON t.oid = con.confrelid
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  WHERE con.contype = 'f'
),
-- View column → source column, read from the view's rewrite rule target list.
view_entries AS (
  SELECT DISTINCT r.ev_class AS view_oid,
    (pg_catalog.regexp_match(e.entry, ':resno (\d+)'))[1]::int AS resno,
    (pg_catalog.regexp_match(e.entry, ':resname (\S+)'))[1] AS resname,
    (pg_catalog.regexp_match(e.entry, ':resorigtbl (\d+)'))[1]::oid AS origtbl,
    (pg_catalog.regexp_match(e.entry, ':resorigcol (\d+)'))[1]::int AS origcol
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
  JOIN user_ns n ON n.oid = v.relnamespace
  CROSS JOIN LATERAL pg_catalog.regexp_split_to_table(r.ev_action::text, 'TARGETENTRY') AS e(entry)
  WHERE r.rulename = '_RETURN'
),
view_map AS (
  SELECT DISTINCT ve.view_oid, va.attname AS view_col, ve.origtbl AS base_oid, ba.attname AS base_col
  FROM view_entries ve
  JOIN pg_catalog.pg_attribute va ON va.attrelid = ve.view_oid AND va.attnum = ve.resno AND va.attname::text = ve.resname
  JOIN pg_catalog.pg_attribute ba ON ba.attrelid = ve.origtbl AND ba.attnum = ve.origcol
  WHERE ve.origtbl IS NOT NULL AND ve.origtbl <> 0
),
view_resolved AS (
  WITH RECURSIVE walk(view_oid, view_col, base_oid, base_col, depth) AS (
    SELECT view_oid, view_col, base_oid, base_col, 0 FROM view_map
    UNION ALL
    SELECT w.view_oid, w.view_col, m.base_oid, m.base_col, w.depth + 1
    FROM walk w JOIN view_map m ON m.view_oid = w.base_oid AND m.view_col = w.base_col
    WHERE w.depth < 16
  )
  SELECT w.view_oid, w.view_col, w.base_oid, w.base_col FROM walk w
  JOIN pg_catalog.pg_class bc ON bc.oid = w.base_oid AND bc.relkind IN ('r', 'p', 'f')
),
funcs AS (
  SELECT p.oid, n.nspname AS schema, p.proname AS name, p.proretset, p.provolatile, p.prorettype,
    p.pronargs, p.pronargdefaults, p.prorows,
    -- The relation whose row type is the only argument: computed fields and relationships.
    CASE WHEN p.pronargs = 1 THEN (
      SELECT pg_catalog.json_build_object('schema', an.nspname, 'name', ac.relname)
      FROM pg_catalog.pg_type at
      JOIN pg_catalog.pg_class ac ON ac.oid = at.typrelid AND ac.relkind IN ('r', 'v', 'm', 'f', 'p')
      JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace
      WHERE at.oid = p.proargtypes[0]) END AS arg_relation,
    pg_catalog.obj_description(p.oid, 'pg_proc') AS comment
  FROM pg_catalog.pg_proc p JOIN exposed n ON n.oid = p.pronamespace
  WHERE p.prokind = 'f' AND p.prorettype <> 'pg_catalog.trigger'::regtype
    AND p.prorettype <> 'pg_catalog.event_trigger'::regtype
),
func_args AS (
  SELECT f.oid,
    pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', coalesce(f.names[a.idx], ''),
      'type', ty.sql_type,
      'cast_type', ct.sql_type,
      'base_type', ty.base_name,
      'category', ty.category,
      'mode', coalesce(f.modes[a.idx], 'i'),
      'has_default', coalesce(f.modes[a.idx], 'i') IN ('i', 'b', 'v')
         AND (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(f.modes[1:a.idx]) m WHERE m IN ('i', 'b', 'v'))
             + CASE WHEN f.modes IS NULL THEN a.idx ELSE 0 END
           > f.pronargs - f.pronargdefaults
    ) ORDER BY a.idx) AS args
  FROM (SELECT fu.*, p.proargnames AS names, p.proargmodes::text[] AS modes,
               coalesce(p.proallargtypes, p.proargtypes::oid[]) AS types
        FROM funcs fu JOIN pg_catalog.pg_proc p ON p.oid = fu.oid) f
  CROSS JOIN LATERAL pg_catalog.unnest(f.types) WITH ORDINALITY a(type_oid, idx)
  JOIN types ty ON ty.oid = a.type_oid
  JOIN types ct ON ct.oid = ty.cast_oid
  GROUP BY f.oid
)
SELECT pg_catalog.json_build_object(
  'server_version_num', pg_catalog.current_setting('server_version_num')::int,
  -- The exposed schemas' comments: /graphql/v1 reads pg_graphql's `@graphql({...})`
  -- schema directives (inflect_names, introspection) from them.
  'schemas', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', e.nspname, 'comment', pg_catalog.obj_description(e.oid, 'pg_namespace'))
      ORDER BY e.nspname)
    FROM exposed e), '[]'),
  -- PostGIS 3's ST_AsGeoJSON(record), which `application/geo+json` answers with: the
  -- extension's own function (in whatever schema it was installed), or null without PostGIS.
  'geojson_function', (
    SELECT pg_catalog.json_build_object('schema', gn.nspname, 'name', gp.proname)
    FROM pg_catalog.pg_proc gp
    JOIN pg_catalog.pg_namespace gn ON gn.oid = gp.pronamespace
    JOIN pg_catalog.pg_depend gd ON gd.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
      AND gd.objid = gp.oid AND gd.deptype = 'e'
    JOIN pg_catalog.pg_extension ge ON ge.oid = gd.refobjid AND ge.extname = 'postgis'
    WHERE gp.proname = 'st_asgeojson' AND gp.proargtypes[0] = 'pg_catalog.record'::pg_catalog.regtype
      AND gp.prorettype = 'pg_catalog.text'::pg_catalog.regtype
    ORDER BY gp.oid LIMIT 1),
  'tables', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'schema', r.schema,
      'name', r.name,
      'kind', CASE r.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized_view'
                WHEN 'f' THEN 'foreign_table' ELSE 'table' END,
      'comment', r.comment,
      'insertable', r.relkind IN ('r', 'p') OR (r.upd & 8) = 8,
      'updatable', r.relkind IN ('r', 'p') OR (r.upd & 4) = 4,
      'deletable', r.relkind IN ('r', 'p') OR (r.upd & 16) = 16,
      'columns', coalesce(c.cols, '[]'),
      'privileges', coalesce((
        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
          'role', ro.rolname,
          'select', pg_catalog.has_any_column_privilege(ro.oid, r.oid, 'SELECT'),
          'insert', pg_catalog.has_any_column_privilege(ro.oid, r.oid, 'INSERT'),
          'update', pg_catalog.has_any_column_privilege(ro.oid, r.oid, 'UPDATE'),
          'delete', pg_catalog.has_table_privilege(ro.oid, r.oid, 'DELETE'),
          -- Whether any row can be read: no RLS, BYPASSRLS, or a permissive SELECT (or ALL)
          -- policy for the role or PUBLIC (/graphql/v1 reflects only such tables).
          'rows_visible', NOT r.relrowsecurity OR ro.rolbypassrls OR EXISTS (
            SELECT 1 FROM pg_catalog.pg_policy po
            WHERE po.polrelid = r.oid AND po.polpermissive AND po.polcmd IN ('r', '*')
              AND (po.polroles @> ARRAY[0::oid] OR ro.oid = ANY (po.polroles)))) ORDER BY ro.rolname)
        FROM api_roles ro), '[]')
    ) ORDER BY r.schema, r.name)
    FROM rels r LEFT JOIN columns c ON c.attrelid = r.oid), '[]'),
  'keys', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'schema', n.nspname, 'name', c.relname, 'primary', k.is_primary, 'columns', k.cols)
      ORDER BY n.nspname, c.relname, NOT k.is_primary, k.cols)
    FROM keys k JOIN pg_catalog.pg_class c ON c.oid = k.relid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace), '[]'),
  'foreign_keys', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', f.conname, 'schema', f.schema, 'table', f.name, 'columns', f.cols,
      'ref_schema', f.ref_schema, 'ref_table', f.ref_name, 'ref_columns', f.ref_cols,
      'comment', f.comment)
      ORDER BY f.schema, f.name, f.conname)
    FROM fks f), '[]'),
  'view_columns', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'schema', vn.nspname, 'view', vc.relname, 'column', v.view_col,
      'base_schema', bn.nspname, 'base_table', bc.relname, 'base_column', v.base_col)
      ORDER BY vn.nspname, vc.relname, v.view_col)
    FROM view_resolved v
    JOIN pg_catalog.pg_class vc ON vc.oid = v.view_oid
    JOIN pg_catalog.pg_namespace vn ON vn.oid = vc.relnamespace
    JOIN pg_catalog.pg_class bc ON bc.oid = v.base_oid
    JOIN pg_catalog.pg_namespace bn ON bn.oid = bc.relnamespace), '[]'),
  'functions', coalesce((
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'schema', f.schema,
      'name', f.name,
      'args', coalesce(fa.args, '[]'),
      'return_type', rt.sql_type,
      'return_base_type', rt.base_name,
      'returns_set', f.proretset,
      'return_category', rt.category,
      'return_media_type', rt.media_type,
      'rows', f.prorows,
      'arg_relation', f.arg_relation,
      'return_relation', CASE WHEN rt.typrelid <> 0 THEN (
          SELECT pg_catalog.json_build_object('schema', rn.nspname, 'name', rc.relname)
          FROM pg_catalog.pg_class rc JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
          WHERE rc.oid = rt.typrelid) END,
      'volatility', CASE f.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END,
      'comment', f.comment,
      'executable_by', coalesce((
        SELECT pg_catalog.json_agg(ro.rolname ORDER BY ro.rolname) FROM api_roles ro
        WHERE pg_catalog.has_function_privilege(ro.oid, f.oid, 'EXECUTE')), '[]')
    ) ORDER BY f.schema, f.name, f.oid)
    FROM funcs f
    JOIN types rt ON rt.oid = f.prorettype
    LEFT JOIN func_args fa ON fa.oid = f.oid), '[]')
) AS catalog
