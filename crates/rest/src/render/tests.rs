use http::Method;

use crate::testutil::*;

/// Requests whose SQL is checked for shape here and, with `REST_SQL_DUMP=<file>`,
/// dumped as PREPARE/EXECUTE pairs to run against a real PostgreSQL.
pub(crate) fn corpus() -> Vec<Req<'static>> {
    let m = |method: Method,
             path: &'static str,
             query: &'static str,
             headers: &[(&'static str, &'static str)],
             body: &'static str| { with(method, path, query, headers, body) };
    let obj = [("accept", "application/vnd.pgrst.object+json")];
    let exact = [("prefer", "count=exact")];
    let repr = [("prefer", "return=representation")];
    vec![
        get("/clients", ""),
        get("/clients", "select=id,name"),
        get("/clients", "select=n:name,hs:health_score::text"),
        get("/clients", "select=*,projects(*)"),
        get("/clients", "select=id,projects(id,name,tasks(id,title))"),
        get("/projects", "select=id,client:clients(name,status)"),
        get("/projects", "select=id,clients!inner(name)&clients.status=eq.lead"),
        get("/projects", "select=id,systems(id,name)"),
        get("/projects", "select=id,...clients(client_name:name)"),
        get("/projects", "select=id,clients()&clients=not.is.null"),
        get("/projects", "select=id,clients(id)&clients=is.null"),
        get("/projects", "select=*,clients(name)&order=clients(name).desc.nullslast"),
        get("/invoices", "select=id,billed:clients!billed_to_id(name),payer:clients!invoices_client_id_fkey(name)"),
        get("/organizations", "select=id,profiles(full_name)"),
        get("/projects", "select=id,active_clients(client_name)"),
        get("/clients", "id=eq.00000000-0000-0000-0000-000000000001"),
        get("/clients", "name=like.*Acme*&status=in.(lead,client)&health_score=gte.10"),
        get("/clients", "name=ilike.a*&health_score=not.is.null&value_cents=is.null"),
        get("/clients", "status=not.in.(lead,\"a,b\")"),
        get("/clients", "status=in.()"),
        get("/clients", "status=not.in.()"),
        get("/clients", "name=match.^A&notes=imatch.x"),
        get("/clients", "health_score=isdistinct.5"),
        get("/clients", "tags=cs.{a,b}&tags=ov.{c}"),
        get("/clients", "tags=cd.{a,b,c}"),
        get("/projects", "period=sl.[1,5)&period=adj.[5,7)&period=nxr.[1,9)&period=nxl.[0,9)&period=sr.[0,1)"),
        get("/documents", "fts=fts(english).cat&name=plfts.fat cat&content_text=wfts(simple).\"a b\" or c&name=phfts.x y"),
        get("/clients", "name=like(any).{a*,*b}&health_score=gt(all).{1,2}&status=eq(any).{lead,client}"),
        get("/clients", "or=(name.eq.A,and(health_score.gt.1,health_score.lt.9))"),
        get("/clients", "not.or=(name.eq.A,status.eq.lead)&and=(tags.cs.{a},name.not.is.null)"),
        get("/tasks", "meta->>kind=eq.bug&meta->tags->0=eq.\"x\"&select=id,kind:meta->>kind,first:meta->tags->0"),
        get("/tasks", "order=meta->>rank.desc,id&limit=5&offset=10"),
        get("/clients", "select=id,projects(id)&projects.order=name.desc&projects.limit=2&projects.offset=1&projects.status=eq.active&projects.or=(progress.gt.5,progress.is.null)"),
        get("/clients", "order=name.asc.nullsfirst,health_score.desc"),
        m(Method::GET, "/clients", "select=id", &exact, ""),
        m(Method::GET, "/projects", "select=id,clients!inner(id)&clients.name=eq.x", &exact, ""),
        m(Method::GET, "/clients", "id=eq.00000000-0000-0000-0000-000000000001", &obj, ""),
        m(Method::GET, "/clients", "", &[("accept", "application/vnd.pgrst.object+json;nulls=stripped")], ""),
        m(Method::GET, "/clients", "", &[("accept", "application/vnd.pgrst.array+json;nulls=stripped")], ""),
        m(Method::GET, "/clients", "select=id,name", &[("accept", "text/csv")], ""),
        m(Method::GET, "/clients", "", &[("range", "0-9")], ""),
        get("/tasks", "select=status,count()"),
        get("/invoices", "select=currency,total:amount_cents.sum(),avg:amount_cents.avg()::int,max:amount_cents::numeric.max()"),
        m(Method::GET, "/tasks", "select=status,n:count()", &exact, ""),
        get("/active_clients", "select=*,projects(id)"),
        get("/private_secrets", "select=id,clients(name)"),
        get("/employees", "select=id,reports:employees!manager_id!inner(name)&reports.name=eq.x"),
        get("/clients", "select=\"name\",\"org_id\"&\"name\"=eq.x"),
        m(Method::HEAD, "/clients", "", &exact, ""),
        // writes
        m(Method::POST, "/clients", "", &[], r#"{"org_id":"00000000-0000-0000-0000-000000000001","name":"A"}"#),
        m(Method::POST, "/clients", "", &repr, r#"[{"org_id":"00000000-0000-0000-0000-000000000001","name":"A","tags":["x","y"]},{"org_id":"00000000-0000-0000-0000-000000000001","name":"B","tags":null}]"#),
        m(Method::POST, "/clients", "columns=org_id,name,status", &[("prefer", "missing=default, return=representation")], r#"[{"org_id":"00000000-0000-0000-0000-000000000001","name":"A"},{"org_id":"00000000-0000-0000-0000-000000000001","name":"B","status":"client"}]"#),
        m(Method::POST, "/clients", "select=id,name,organizations(name)", &repr, r#"{"org_id":"00000000-0000-0000-0000-000000000001","name":"A"}"#),
        m(Method::POST, "/systems", "on_conflict=id", &[("prefer", "resolution=merge-duplicates,return=representation")], r#"[{"id":"crm","name":"CRM"}]"#),
        m(Method::POST, "/systems", "", &[("prefer", "resolution=ignore-duplicates")], r#"[{"id":"crm","name":"CRM"}]"#),
        m(Method::POST, "/organizations", "", &[("prefer", "return=headers-only")], r#"{"name":"Org"}"#),
        m(Method::POST, "/documents", "", &repr, r#"{"name":"d","embedding":[0.1,0.2,0.3]}"#),
        m(Method::POST, "/tasks", "", &[("prefer", "return=representation,count=exact")], r#"{"project_id":"00000000-0000-0000-0000-000000000001","title":"t","meta":{"a":[1,2]}}"#),
        m(Method::POST, "/organizations", "", &[], "{}"),
        m(Method::POST, "/clients", "", &[], "[]"),
        m(Method::PATCH, "/clients", "id=eq.00000000-0000-0000-0000-000000000001", &[], r#"{"name":"B","health_score":3}"#),
        m(Method::PATCH, "/clients", "status=in.(lead,prospect)&or=(name.eq.a,name.eq.b)&select=id,projects(id)", &repr, r#"{"status":"client"}"#),
        m(Method::PATCH, "/clients", "id=eq.00000000-0000-0000-0000-000000000001", &repr, "{}"),
        m(Method::PATCH, "/clients", "id=eq.00000000-0000-0000-0000-000000000001", &[], "{}"),
        m(Method::DELETE, "/clients", "id=eq.00000000-0000-0000-0000-000000000001", &[], ""),
        m(Method::DELETE, "/clients", "status=eq.archived", &[("prefer", "return=representation"), ("accept", "application/vnd.pgrst.object+json")], ""),
        m(Method::DELETE, "/tasks", "", &[("prefer", "count=exact")], ""),
        m(Method::PUT, "/systems", "id=eq.crm", &repr, r#"{"id":"crm","name":"CRM 2"}"#),
        // calls
        m(Method::POST, "/rpc/match_documents", "", &[], r#"{"query_embedding":[0.1,0.2,0.3],"match_count":3}"#),
        m(Method::POST, "/rpc/match_documents", "select=id,name,projects(name)&name=neq.x&order=id&limit=2", &exact, r#"{"query_embedding":[0.1,0.2,0.3]}"#),
        m(Method::POST, "/rpc/bump", "", &[], r#"{"p_id":"00000000-0000-0000-0000-000000000001"}"#),
        m(Method::POST, "/rpc/echo", "", &[], r#"{"any":["thing"]}"#),
        m(Method::POST, "/rpc/take_payload", "", &[("prefer", "params=single-object")], r#"{"k":1}"#),
        get("/rpc/stats", "p_org=00000000-0000-0000-0000-000000000001&n=gt.0&order=status"),
        get("/rpc/counts", "limit=2&offset=1"),
        m(Method::GET, "/rpc/counts", "", &exact, ""),
        get("/rpc/ping", ""),
        m(Method::POST, "/rpc/ping", "", &[], ""),
        get("/rpc/first_client", "p_org=00000000-0000-0000-0000-000000000001"),
        m(Method::POST, "/rpc/create_client", "select=id,name", &obj, r#"{"p_org":"00000000-0000-0000-0000-000000000001","p_name":"x"}"#),
        get("/rpc/tagged", "t=a&t=b"),
        m(Method::POST, "/rpc/tagged", "", &[], r#"{"t":["a","b"]}"#),
        m(Method::POST, "/rpc/search_clients", "select=id,projects(id)", &[], r#"{"q":"a","statuses":["lead","client"]}"#),
        get("/rpc/search_clients", "q=a&statuses={lead,client}&status=eq.lead"),
        get("/rpc/client_summary", "p_client_id=00000000-0000-0000-0000-000000000001"),
        // computed fields and relationships
        get("/clients", "select=id,display_name,label:display_name&display_name=like.A*&order=display_name.desc"),
        get("/clients", "select=id,organization(name)&organization.name=eq.x"),
        get("/clients", "select=id,organization!inner(name)&order=organization(name)"),
        get("/projects", "select=id,open_tasks(id,title)&open_tasks.order=id.desc&open_tasks.limit=1"),
        get("/projects", "select=id,...top_task(first_task:title),open_tasks!inner(id)&open_tasks.status=eq.todo"),
        get("/projects", "select=id,clients(id,display_name)"),
        m(Method::POST, "/clients", "select=id,display_name,organization(name)", &repr, r#"{"org_id":"00000000-0000-0000-0000-000000000001","name":"A"}"#),
        m(Method::PATCH, "/clients", "display_name=eq.x&select=display_name", &repr, r#"{"name":"B"}"#),
        m(Method::POST, "/rpc/search_clients", "select=id,display_name,organization(name)&display_name=neq.x", &[], r#"{"q":"a"}"#),
        get("/rpc/active_clients_of", "p_org=00000000-0000-0000-0000-000000000001&select=client_name,projects(name)"),
        get("/employees", "select=id,manager_id(name),employees(name)"),
        get("/documents", "select=id,project:project_id(name)"),
        get("/projects", "select=id,projects_org_id_fkey(name)"),
        // aggregates in embeds
        get("/clients", "select=name,projects(count())"),
        get("/clients", "select=name,projects(status,n:count(),progress.sum())"),
        get("/projects", "select=status,clients(name),count()"),
        get("/projects", "select=status,...clients(name),count()"),
        get("/clients", "select=status,projects!inner(),count()&projects.status=eq.active"),
        // aggregates hoisted out of to-one spreads
        get("/projects", "select=status,...clients(n:name.count(),best:health_score.max())"),
        get("/projects", "select=...clients(count())"),
        get("/tasks", "select=...projects(status,...clients(clients:name.count()))"),
        // to-many spreads
        get("/clients", "select=name,...projects(project_names:name,status)&projects.order=name"),
        get("/organizations", "select=name,...clients(client:name,...projects(project:name))"),
        get("/organizations", "select=name,...clients(client:name,projects(name),org:organizations(name))"),
        get("/projects", "select=name,...open_tasks(title)"),
    ]
}

fn quote_param(p: &Option<String>) -> String {
    match p {
        None => "NULL".to_string(),
        Some(v) => format!("'{}'", v.replace('\'', "''")),
    }
}

#[test]
fn corpus_renders_with_every_param_bound() {
    let mut dump = String::new();
    for (i, req) in corpus().iter().enumerate() {
        let s = sql(req);
        assert_params_bound(&s);
        assert!(s.sql.starts_with("WITH pgrst_source AS ("), "{}", s.sql);
        assert!(s.sql.contains(
            "AS total_result_set, pg_catalog.count(_postgrest_t)::bigint AS page_total,"
        ));
        assert!(s.sql.contains("::text AS body,"));
        assert!(
            s.sql.contains("::text AS location, NULLIF(")
                || s.sql.contains("NULL::text AS location FROM pgrst_source AS _postgrest_t")
                || s.sql.contains("::text AS location, (SELECT pg_catalog.count(*) FROM pgrst_source WHERE pgrst_source._pgrst_inserted)::bigint AS inserted_rows, NULLIF("),
            "{}",
            s.sql
        );
        // Reads of tables and views skip the response settings; calls and writes read them.
        let is_read = s
            .sql
            .contains("NULL::text AS location FROM pgrst_source AS _postgrest_t")
            && !s.sql.contains("RETURNING");
        assert_eq!(
            !is_read,
            s.sql.contains("AS response_headers, NULLIF(pg_catalog.current_setting('response.status', true), '') AS response_status FROM"),
            "{}",
            s.sql
        );
        let types = vec!["text"; s.params.len()].join(",");
        let args = s
            .params
            .iter()
            .map(quote_param)
            .collect::<Vec<_>>()
            .join(",");
        let header = format!("-- {i}: {} {}?{}\n", req.method, req.path, req.query);
        dump.push_str(&header);
        if s.params.is_empty() {
            dump.push_str(&format!(
                "BEGIN; PREPARE q{i} AS {};\nEXECUTE q{i};\nROLLBACK;\n",
                s.sql
            ));
        } else {
            dump.push_str(&format!(
                "BEGIN; PREPARE q{i}({types}) AS {};\nEXECUTE q{i}({args});\nROLLBACK;\n",
                s.sql
            ));
        }
    }
    if let Ok(path) = std::env::var("REST_SQL_DUMP") {
        std::fs::write(path, dump).unwrap();
    }
}

#[test]
fn sql_fragments() {
    let obj = [("accept", "application/vnd.pgrst.object+json")];
    let cases: Vec<(Req, &[&str])> = vec![
        (get("/clients", "select=id"), &["WITH pgrst_source AS (SELECT \"t0\".\"id\" AS \"id\" FROM \"public\".\"clients\" AS \"t0\" LIMIT $1::bigint)", "NULL::bigint AS total_result_set", "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text"]),
        (get("/clients", "id=eq.5"), &["\"t0\".\"id\" = $1::uuid"]),
        (get("/clients", "health_score=gt.5"), &["\"t0\".\"health_score\" > $1::integer"]),
        (get("/clients", "status=eq.lead"), &["\"t0\".\"status\" = $1::public.client_status"]),
        (get("/clients", "status=like.le*"), &["\"t0\".\"status\"::text LIKE $1::text"]),
        (get("/clients", "name=ilike.*x"), &["\"t0\".\"name\" ILIKE $1::text"]),
        (get("/clients", "status=in.(a,b)"), &["\"t0\".\"status\" = ANY($1::public.client_status[])"]),
        (get("/clients", "status=not.in.(a,b)"), &["NOT (\"t0\".\"status\" = ANY($1::public.client_status[]))"]),
        (get("/clients", "status=in.()"), &["WHERE FALSE"]),
        (get("/clients", "notes=is.null"), &["\"t0\".\"notes\" IS NULL"]),
        (get("/clients", "notes=not.is.null"), &["NOT (\"t0\".\"notes\" IS NULL)"]),
        (get("/clients", "notes=is.not_null"), &["\"t0\".\"notes\" IS NOT NULL"]),
        (get("/tasks", "done=is.true"), &["\"t0\".\"done\" IS TRUE"]),
        (get("/tasks", "done=is.unknown"), &["\"t0\".\"done\" IS UNKNOWN"]),
        (get("/clients", "health_score=isdistinct.3"), &["IS DISTINCT FROM $1::integer"]),
        (get("/clients", "tags=cs.{a}"), &["\"t0\".\"tags\" @> $1::text[]"]),
        (get("/clients", "tags=cd.{a}"), &["\"t0\".\"tags\" <@ $1::text[]"]),
        (get("/clients", "tags=ov.{a}"), &["\"t0\".\"tags\" && $1::text[]"]),
        (get("/projects", "period=sl.[1,2)"), &["\"t0\".\"period\" << $1::int4range"]),
        (get("/projects", "period=sr.[1,2)"), &["\"t0\".\"period\" >> $1::int4range"]),
        (get("/projects", "period=nxr.[1,2)"), &["\"t0\".\"period\" &< $1::int4range"]),
        (get("/projects", "period=nxl.[1,2)"), &["\"t0\".\"period\" &> $1::int4range"]),
        (get("/projects", "period=adj.[1,2)"), &["\"t0\".\"period\" -|- $1::int4range"]),
        (get("/clients", "name=match.^a"), &["\"t0\".\"name\" ~ $1::text"]),
        (get("/clients", "name=imatch.^a"), &["\"t0\".\"name\" ~* $1::text"]),
        (get("/documents", "fts=fts.cat"), &["\"t0\".\"fts\" @@ pg_catalog.to_tsquery($1::text)"]),
        (get("/documents", "fts=plfts(english).cat"), &["\"t0\".\"fts\" @@ pg_catalog.plainto_tsquery($1::regconfig, $2::text)"]),
        (get("/documents", "name=wfts(english).cat"), &["pg_catalog.to_tsvector($1::regconfig, \"t0\".\"name\") @@ pg_catalog.websearch_to_tsquery($2::regconfig, $3::text)"]),
        (get("/documents", "name=phfts.cat"), &["pg_catalog.phraseto_tsquery($1::text)"]),
        (get("/clients", "name=like(any).{a*}"), &["\"t0\".\"name\" LIKE ANY($1::text[])"]),
        (get("/clients", "health_score=gt(all).{1,2}"), &["\"t0\".\"health_score\" > ALL($1::integer[])"]),
        (get("/clients", "or=(name.eq.a,health_score.gt.1)"), &["(\"t0\".\"name\" = $1::text OR \"t0\".\"health_score\" > $2::integer)"]),
        (get("/clients", "not.and=(name.eq.a,health_score.gt.1)"), &["NOT (\"t0\".\"name\" = $1::text AND \"t0\".\"health_score\" > $2::integer)"]),
        (get("/clients", "or=(name.eq.a,not.and(notes.is.null,tags.cs.{x}))"), &["(\"t0\".\"name\" = $1::text OR NOT (\"t0\".\"notes\" IS NULL AND \"t0\".\"tags\" @> $2::text[]))"]),
        (get("/tasks", "meta->>kind=eq.x"), &["(\"t0\".\"meta\"->>$1::text) = $2::text"]),
        (get("/tasks", "meta->a=cs.{\"b\":1}"), &["(\"t0\".\"meta\"->$1::text) @> $2::jsonb"]),
        (get("/tasks", "select=k:meta->list->1"), &["(\"t0\".\"meta\"->$1::text->$2::integer) AS \"k\""]),
        (get("/tasks", "select=meta->>kind"), &["AS \"kind\""]),
        (get("/clients", "select=hs:health_score::text"), &["(\"t0\".\"health_score\")::text AS \"hs\""]),
        (get("/clients", "order=name.desc.nullslast,id"), &["ORDER BY \"t0\".\"name\" DESC NULLS LAST, \"t0\".\"id\""]),
        (get("/clients", "order=name.asc.nullsfirst"), &["ORDER BY \"t0\".\"name\" ASC NULLS FIRST"]),
        (get("/clients", "select=id,projects(id)"), &["LEFT JOIN LATERAL (SELECT pg_catalog.json_agg(_e) AS body FROM (SELECT \"t1\".\"id\" AS \"id\" FROM \"public\".\"projects\" AS \"t1\" WHERE \"t1\".\"org_id\" = \"t0\".\"org_id\" AND \"t1\".\"client_id\" = \"t0\".\"id\") AS _e) AS \"pgrst_t1\" ON TRUE", "coalesce(\"pgrst_t1\".body, '[]'::json) AS \"projects\""]),
        (get("/projects", "select=id,clients(id)"), &["SELECT pg_catalog.row_to_json(_e) AS body FROM", "\"pgrst_t1\".body AS \"clients\""]),
        (get("/projects", "select=id,c:clients!inner(id)"), &["WHERE EXISTS (SELECT 1 FROM \"public\".\"clients\" AS \"t1\" WHERE \"t1\".\"org_id\" = \"t0\".\"org_id\" AND \"t1\".\"id\" = \"t0\".\"client_id\")", "AS \"c\""]),
        (get("/projects", "select=id,clients()&clients=is.null"), &["WHERE NOT EXISTS (SELECT 1 FROM \"public\".\"clients\""]),
        (get("/projects", "select=id,...clients(cname:name)"), &["LEFT JOIN LATERAL (SELECT \"t1\".\"name\" AS \"cname\" FROM", "\"pgrst_t1\".\"cname\" AS \"cname\""]),
        (get("/projects", "select=id,systems(id)"), &["EXISTS (SELECT 1 FROM \"public\".\"project_systems\" AS pgrst_jn WHERE pgrst_jn.\"project_id\" = \"t0\".\"id\" AND pgrst_jn.\"system_id\" = \"t1\".\"id\")"]),
        (get("/projects", "select=id,clients(name)&order=clients(name).desc"), &["ORDER BY (SELECT \"_pgrst_ord\".\"name\" FROM \"public\".\"clients\" AS \"_pgrst_ord\" WHERE \"_pgrst_ord\".\"org_id\" = \"t0\".\"org_id\" AND \"_pgrst_ord\".\"id\" = \"t0\".\"client_id\" LIMIT 1) DESC"]),
        (get("/clients", "select=id,projects(id)&projects.limit=1&projects.order=name"), &["ORDER BY \"t1\".\"name\" LIMIT $1::bigint"]),
        (get("/tasks", "select=status,count()"), &["pg_catalog.count(*) AS \"count\"", "GROUP BY 1"]),
        (get("/invoices", "select=currency,s:amount_cents.sum()::text"), &["(pg_catalog.sum(\"t0\".\"amount_cents\"))::text AS \"s\"", "GROUP BY 1"]),
        (with(Method::GET, "/clients", "", &obj, ""), &["coalesce(pg_catalog.string_agg(pg_catalog.row_to_json(_postgrest_t)::text, ','), '')::text AS body"]),
        (with(Method::GET, "/clients", "", &[("accept", "text/csv")], ""), &["pg_catalog.json_object_keys", "pg_catalog.chr(10)"]),
        (with(Method::POST, "/clients", "", &[], r#"{"name":"x"}"#), &["INSERT INTO \"public\".\"clients\" AS \"pgrst_target\" (\"name\") SELECT \"name\" FROM pg_catalog.json_to_recordset($1::json) AS _(\"name\" text) RETURNING 1", "''::text AS body"]),
        (with(Method::POST, "/clients", "", &[("prefer", "return=representation")], r#"{"name":"x"}"#), &["RETURNING \"pgrst_target\".*", "FROM pgrst_source AS \"t0\""]),
        (with(Method::POST, "/clients", "columns=name,status", &[("prefer", "missing=default")], r#"[{"name":"x"}]"#), &["CASE WHEN _j.value ? 'status' THEN _r.\"status\" ELSE ('lead'::client_status) END", "CASE WHEN _j.value ? 'name' THEN _r.\"name\" ELSE NULL END"]),
        (with(Method::POST, "/systems", "", &[("prefer", "resolution=merge-duplicates")], r#"{"id":"a","name":"b"}"#), &["ON CONFLICT (\"id\") DO UPDATE SET \"id\" = EXCLUDED.\"id\", \"name\" = EXCLUDED.\"name\""]),
        (with(Method::POST, "/systems", "on_conflict=name", &[("prefer", "resolution=ignore-duplicates")], r#"{"id":"a","name":"b"}"#), &["ON CONFLICT (\"name\") DO NOTHING"]),
        (with(Method::POST, "/organizations", "", &[("prefer", "return=headers-only")], r#"{"name":"b"}"#), &["RETURNING \"pgrst_target\".\"id\"", "pg_catalog.json_build_array('id', _postgrest_t.\"id\"::text)"]),
        (with(Method::POST, "/organizations", "", &[("prefer", "resolution=merge-duplicates")], r#"{"id":"b","name":"b"}"#), &["ON CONFLICT (\"id\") DO UPDATE SET", "RETURNING 1, (\"pgrst_target\".xmax = 0) AS _pgrst_inserted)", "AS inserted_rows, NULLIF("]),
        (with(Method::POST, "/organizations", "", &[], "{}"), &["INSERT INTO \"public\".\"organizations\" AS \"pgrst_target\" SELECT FROM pg_catalog.json_array_elements($1::json)"]),
        (with(Method::PATCH, "/clients", "id=eq.1", &[], r#"{"name":"x"}"#), &["UPDATE \"public\".\"clients\" AS \"pgrst_target\" SET \"name\" = _.\"name\" FROM (SELECT * FROM pg_catalog.json_to_record($1::json) AS _r(\"name\" text)) AS _ WHERE \"pgrst_target\".\"id\" = $2::uuid RETURNING 1"]),
        (with(Method::PATCH, "/clients", "", &[], "{}"), &["WHERE FALSE"]),
        (with(Method::DELETE, "/clients", "id=eq.1", &[], ""), &["DELETE FROM \"public\".\"clients\" AS \"pgrst_target\" WHERE \"pgrst_target\".\"id\" = $1::uuid RETURNING 1"]),
        (with(Method::DELETE, "/clients", "", &[("prefer", "count=exact")], ""), &["pg_catalog.count(_postgrest_t)::bigint AS total_result_set"]),
        (with(Method::PUT, "/systems", "id=eq.a", &[], r#"{"id":"a","name":"n"}"#), &["ON CONFLICT (\"id\") DO UPDATE SET"]),
        (with(Method::DELETE, "/clients", "status=eq.x&order=name.desc&limit=2&offset=1", &[], ""), &["DELETE FROM \"public\".\"clients\" AS \"pgrst_target\" WHERE \"pgrst_target\".ctid = ANY(ARRAY(SELECT \"pgrst_target\".ctid FROM \"public\".\"clients\" AS \"pgrst_target\" WHERE \"pgrst_target\".\"status\" = $1::public.client_status ORDER BY \"pgrst_target\".\"name\" DESC LIMIT $2::bigint OFFSET $3::bigint))"]),
        (with(Method::PATCH, "/clients", "order=name&limit=1", &[], r#"{"name":"n"}"#), &[") AS _ WHERE \"pgrst_target\".ctid = ANY(ARRAY(SELECT \"pgrst_target\".ctid FROM \"public\".\"clients\" AS \"pgrst_target\" ORDER BY \"pgrst_target\".\"name\" LIMIT $2::bigint))"]),
        (with(Method::POST, "/rpc/match_documents", "", &[], r#"{"query_embedding":[1,2,3]}"#), &["WITH pgrst_source AS (SELECT * FROM \"public\".\"match_documents\"(\"query_embedding\" := $1::extensions.vector))"]),
        (with(Method::POST, "/rpc/ping", "", &[], ""), &["SELECT \"public\".\"ping\"() AS pgrst_scalar", "-> 0)::text, 'null')"]),
        (with(Method::POST, "/rpc/echo", "", &[], "[1]"), &["\"public\".\"echo\"($1::json)"]),
        (with(Method::POST, "/rpc/tagged", "", &[], r#"{"t":["a"]}"#), &["VARIADIC \"t\" := $1::text[]"]),
        (get("/rpc/counts", ""), &["SELECT pgrst_scalar FROM \"public\".\"counts\"() AS pgrst_scalar", "coalesce(pg_catalog.json_agg(_postgrest_t.pgrst_scalar), '[]')"]),
        (get("/rpc/stats", "p_org=1&n=gt.0"), &["\"public\".\"stats\"(\"p_org\" := $1::uuid)", "\"t0\".\"n\" > $2::bigint"]),
    ];
    for (req, fragments) in cases {
        let s = sql(&req);
        assert_params_bound(&s);
        for f in fragments {
            assert!(
                s.sql.contains(f),
                "{} {}?{}\nmissing: {f}\nin: {}",
                req.method,
                req.path,
                req.query,
                s.sql
            );
        }
    }
}

#[test]
fn values_become_params() {
    let (_, s) = crate::testutil::run(&get(
        "/clients",
        "name=eq.O'Brien; drop table x;--&status=in.(\"a,b\",c)",
    ))
    .unwrap();
    assert!(!s.sql.contains("O'Brien"));
    assert_eq!(s.params[0].as_deref(), Some("O'Brien; drop table x;--"));
    assert_eq!(s.params[1].as_deref(), Some("{\"a,b\",\"c\"}"));
    let (_, s) = crate::testutil::run(&with(
        Method::POST,
        "/rpc/match_documents",
        "",
        &[],
        r#"{"query_embedding":[0.5,1e-3],"match_count":2,"filter":{"k":"v"}}"#,
    ))
    .unwrap();
    assert_eq!(s.params[0].as_deref(), Some("[0.5,0.001]"));
    assert_eq!(s.params[1].as_deref(), Some("2"));
    assert_eq!(s.params[2].as_deref(), Some("{\"k\":\"v\"}"));
    let (_, s) = crate::testutil::run(&with(
        Method::POST,
        "/rpc/search_clients",
        "",
        &[],
        r#"{"q":"x","statuses":null}"#,
    ))
    .unwrap();
    assert_eq!(s.params[1], None);
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(super::ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(super::ident("x"), "\"x\"");
}

#[test]
fn reads_return_the_response_settings_when_a_pre_request_may_set_them() {
    let (_, s) = run_with(&get("/clients", "select=id"), &config()).unwrap();
    assert!(!s.sql.contains("response_headers"), "{}", s.sql);
    let cfg = crate::RestConfig {
        pre_request: true,
        ..config()
    };
    let (_, s) = run_with(&get("/clients", "select=id"), &cfg).unwrap();
    assert!(
        s.sql.ends_with("NULL::text AS location, NULLIF(pg_catalog.current_setting('response.headers', true), '') AS response_headers, NULLIF(pg_catalog.current_setting('response.status', true), '') AS response_status FROM pgrst_source AS _postgrest_t"),
        "{}",
        s.sql
    );
}
