"""The simulated contract universe: USDT perpetuals with MEXC's contract detail fields."""

from __future__ import annotations

import math
import random
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Contract", "make_contracts"]

# A few familiar names first (base price, contract size), then generated ones.
KNOWN: tuple[tuple[str, float, float], ...] = (
    ("BTC", 43000.0, 0.0001),
    ("ETH", 2300.0, 0.01),
    ("SOL", 98.0, 1.0),
    ("XRP", 0.62, 10.0),
    ("DOGE", 0.085, 100.0),
    ("ADA", 0.52, 10.0),
    ("AVAX", 36.0, 0.1),
    ("LINK", 14.5, 0.1),
    ("DOT", 7.2, 1.0),
    ("TRX", 0.105, 100.0),
    ("LTC", 71.0, 0.01),
    ("BCH", 245.0, 0.01),
    ("ATOM", 9.8, 0.1),
    ("NEAR", 3.4, 1.0),
    ("APT", 9.1, 0.1),
    ("ARB", 1.9, 1.0),
    ("OP", 3.6, 1.0),
    ("SUI", 1.4, 1.0),
    ("INJ", 35.0, 0.1),
    ("FIL", 5.6, 1.0),
    ("ETC", 26.0, 0.1),
    ("UNI", 6.4, 1.0),
    ("AAVE", 98.0, 0.01),
    ("PEPE", 0.0000012, 10_000_000.0),
    ("SHIB", 0.0000098, 1_000_000.0),
    ("WIF", 2.1, 1.0),
    ("TIA", 15.0, 0.1),
    ("SEI", 0.7, 10.0),
    ("RNDR", 4.5, 1.0),
    ("FET", 0.65, 10.0),
    ("ORDI", 60.0, 0.01),
    ("STX", 1.6, 1.0),
    ("IMX", 2.3, 1.0),
    ("HBAR", 0.08, 100.0),
    ("ALGO", 0.19, 10.0),
    ("XLM", 0.12, 10.0),
    ("GALA", 0.03, 100.0),
    ("SAND", 0.55, 10.0),
    ("MANA", 0.5, 10.0),
    ("1000BONK", 0.012, 1000.0),
)


class Contract(BaseModel):
    """One row of ``/api/v1/contract/detail`` (the fields a client relies on)."""

    model_config = ConfigDict(frozen=True)

    contract_id: int
    symbol: str
    base_coin: str
    base_price: float
    contract_size: float
    price_scale: int
    vol_scale: int = 0
    min_vol: float = 1.0
    max_vol: float = 1_000_000.0

    @property
    def price_unit(self) -> float:
        return float(10.0**-self.price_scale)

    def round_price(self, price: float) -> float:
        return round(price, self.price_scale)

    def detail(self, api_allowed: bool = True) -> dict[str, Any]:
        """MEXC's contract detail row (field names and meanings as in the REST docs)."""
        return {
            "symbol": self.symbol,
            "displayName": f"{self.base_coin}_USDT永续",
            "displayNameEn": f"{self.base_coin}_USDT PERPETUAL",
            "positionOpenType": 3,
            "baseCoin": self.base_coin,
            "quoteCoin": "USDT",
            "baseCoinName": self.base_coin,
            "quoteCoinName": "USDT",
            "futureType": 1,
            "settleCoin": "USDT",
            "contractSize": self.contract_size,
            "minLeverage": 1,
            "maxLeverage": 200 if self.contract_id <= 2 else 50,
            "priceScale": self.price_scale,
            "volScale": self.vol_scale,
            "amountScale": 4,
            "priceUnit": self.price_unit,
            "volUnit": 1,
            "minVol": self.min_vol,
            "maxVol": self.max_vol,
            "bidLimitPriceRate": 0.1,
            "askLimitPriceRate": 0.1,
            "takerFeeRate": 0.0002,
            "makerFeeRate": 0.0,
            "maintenanceMarginRate": 0.004,
            "initialMarginRate": 0.005,
            "riskBaseVol": 10000,
            "riskIncrVol": 200000,
            "riskIncrMmr": 0.004,
            "riskIncrImr": 0.004,
            "riskLevelLimit": 5,
            "priceCoefficientVariation": 0.1,
            "indexOrigin": ["BINANCE", "GATEIO", "HUOBI", "MXC"],
            "state": 0,
            "isNew": False,
            "isHot": self.contract_id <= 5,
            "isHidden": False,
            "conceptPlate": [],
            "riskLimitType": "BY_VOLUME",
            "maxNumOrders": [200, 50],
            "marketOrderMaxLevel": 20,
            "marketOrderPriceLimitRate1": 0.2,
            "marketOrderPriceLimitRate2": 0.005,
            "triggerProtect": 0.1,
            "appraisal": 0,
            "showAppraisalCountdown": 0,
            "automaticDelivery": 0,
            "apiAllowed": api_allowed,
            "type": 1,
        }


def _price_scale(price: float) -> int:
    """Decimals giving about five significant digits, as MEXC lists prices."""
    return max(1, min(10, 4 - math.floor(math.log10(price))))


def make_contracts(count: int, seed: int) -> list[Contract]:
    """``count`` USDT perpetuals: the known names first, then ``C0041_USDT`` and so on."""
    rng = random.Random(f"contracts-{seed}")
    contracts: list[Contract] = []
    for index in range(count):
        if index < len(KNOWN):
            base, price, size = KNOWN[index]
        else:
            base = f"C{index + 1:04d}"
            price = 10 ** rng.uniform(-3, 2.5)
            size = 10 ** round(math.log10(100.0 / price)) if price < 100 else 0.01
        contracts.append(
            Contract(
                contract_id=index + 1,
                symbol=f"{base}_USDT",
                base_coin=base,
                base_price=price,
                contract_size=size,
                price_scale=_price_scale(price),
            )
        )
    return contracts
