-- Finance: invoices with line items (their cents must add up to the invoice amount) and
-- payments (an invoice becomes paid when completed payments cover it; trigger in
-- _functions_triggers). Money is bigint cents plus an ISO-4217 currency code.

-- Sum of the line items' cents: each item contributes its `amount_cents`, or
-- `quantity * unit_price_cents` when amount_cents is absent. NULL when an item is malformed.
create or replace function public.line_items_total_cents(items jsonb)
returns bigint
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when items is null then 0::bigint
    when jsonb_typeof(items) <> 'array' then null
    else (
      select coalesce(sum(
        case
          when jsonb_typeof(item) <> 'object' then null
          when item ? 'amount_cents' then (item ->> 'amount_cents')::bigint
          else coalesce((item ->> 'quantity')::numeric, 1)::bigint * (item ->> 'unit_price_cents')::bigint
        end), 0)::bigint
      from jsonb_array_elements(items) as item
    )
  end
$$;
comment on function public.line_items_total_cents(jsonb) is
  'Total cents of invoice line items (amount_cents, or quantity * unit_price_cents, per item).';

-- CHECK helper: an empty list is allowed (a draft without detail); otherwise the items must
-- add up exactly, and no item may be negative or malformed.
create or replace function public.invoice_line_items_valid(items jsonb, amount_cents bigint)
returns boolean
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when items is null then true
    when jsonb_typeof(items) <> 'array' then false
    when jsonb_array_length(items) = 0 then true
    when exists (
      select 1 from jsonb_array_elements(items) as item
      where jsonb_typeof(item) <> 'object'
         or coalesce((item ->> 'amount_cents')::bigint, 0) < 0
         or coalesce((item ->> 'unit_price_cents')::bigint, 0) < 0
    ) then false
    else coalesce(public.line_items_total_cents(items) = amount_cents, false)
  end
$$;

create table public.invoices (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid,
  client_id uuid,
  invoice_number text not null,
  amount_cents bigint not null check (amount_cents >= 0),
  currency char(3) not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  status text not null default 'draft' check (status in ('draft', 'sent', 'paid', 'overdue', 'void', 'cancelled')),
  issued_at timestamptz,
  due_date date,
  paid_at timestamptz,
  line_items jsonb not null default '[]'::jsonb,
  pdf_url text,
  notes text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, invoice_number),
  constraint invoices_line_items_total_check check (public.invoice_line_items_valid(line_items, amount_cents)),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete set null (project_id),
  foreign key (org_id, client_id) references public.clients (org_id, id) on delete set null (client_id)
);

create table public.payments (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  invoice_id uuid not null,
  amount_cents bigint not null check (amount_cents > 0),
  -- Defaults to the invoice's currency and must equal it (trigger check_payment_currency).
  currency char(3) not null check (currency ~ '^[A-Z]{3}$'),
  status text not null default 'pending' check (status in ('pending', 'completed', 'failed', 'refunded')),
  method text,
  provider_ref text,
  processed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, invoice_id) references public.invoices (org_id, id) on delete cascade
);
