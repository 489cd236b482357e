"""Pure reconcile planners: (CR, observed children, nodes, now) -> Plan. The handlers apply a Plan with
create-if-absent / delete / status patch calls, so every decision is unit-testable without a cluster and the
operator can die between any two API calls without duplicating or losing children."""
