import torch
from torch import nn

from igan.averaging import HistoricalAverage, ParameterEMA


def test_historical_average_running_mean_and_penalty():
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    ha = HistoricalAverage([p])
    assert ha.penalty().item() == 0.0
    history = []
    for value in ([1.0, 2.0], [3.0, 0.0], [5.0, 1.0]):
        with torch.no_grad():
            p.copy_(torch.tensor(value))
        history.append(torch.tensor(value))
        ha.update()
    mean = torch.stack(history).mean(0)
    torch.testing.assert_close(ha.mean[0], mean)
    with torch.no_grad():
        p.copy_(torch.tensor([0.0, 0.0]))
    pen = ha.penalty()
    torch.testing.assert_close(pen, (mean ** 2).sum())
    pen.backward()
    torch.testing.assert_close(p.grad, 2 * (p.detach() - mean))


def test_historical_average_state_round_trip():
    p = nn.Parameter(torch.randn(3))
    ha = HistoricalAverage([p])
    ha.update()
    ha2 = HistoricalAverage([p])
    ha2.load_state_dict(ha.state_dict())
    assert ha2.count == 1 and torch.equal(ha2.mean[0], ha.mean[0])


def test_ema_is_bias_corrected_weighted_average():
    lin = nn.Linear(1, 1, bias=False)
    ema = ParameterEMA(lin, rate=0.1)
    values = [1.0, 3.0, -2.0]
    for v in values:
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update(lin)
    # avg_t = sum_i r (1-r)^(t-i) v_i, divided by 1 - (1-r)^t
    r, t = 0.1, len(values)
    num = sum(r * (1 - r) ** (t - 1 - i) * v for i, v in enumerate(values))
    expect = num / (1 - (1 - r) ** t)
    assert abs(ema.module.weight.item() - expect) < 1e-6
    assert not ema.module.weight.requires_grad
