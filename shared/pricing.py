"""What an online endpoint costs per hour: a small table of list prices, and where they come from."""

from __future__ import annotations

# USD per instance-hour, pay-as-you-go, Linux. NC4as_T4_v3 and NC6s_v3 are the list prices in
# shared/reference/azure-facts.md ("What idle GPU endpoints cost", late 2025). NC24ads_A100_v4, the
# default AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE, is not there: its price is East US's, as copied from
# Azure's price list by https://raw.githubusercontent.com/datareceipts/data-receipts/main/109-gpu-pricing/hyperscalers.json
# (retrieved 2026-11-09); check it against https://azure.microsoft.com/pricing/details/virtual-machines/linux/.
HOURLY_PRICES: dict[str, float] = {
    "Standard_NC4as_T4_v3": 0.53,
    "Standard_NC6s_v3": 3.06,
    "Standard_NC24ads_A100_v4": 3.673,
}
PRICE_SOURCE = (
    "Pay-as-you-go Linux list prices in USD per instance-hour: NC4as_T4_v3 $0.53 and NC6s_v3 $3.06 "
    "(public list prices, late 2025); NC24ads_A100_v4 $3.673 (East US, Azure's price list as copied on "
    "2026-11-09). Regions, discounts and reservations differ: see azure.microsoft.com/pricing. "
    "A managed online endpoint bills at least one instance per deployment around the clock, used or not."
)


def hourly_cost(instance_type: str, instance_count: int = 1) -> float | None:
    """USD per hour of one deployment of `instance_count` instances; None for a size the table lacks."""
    price = HOURLY_PRICES.get(instance_type)
    return None if price is None else price * instance_count
