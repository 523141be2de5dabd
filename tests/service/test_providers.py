from service.runtime import CPU, CUDA, choose_providers


def test_cuda_requested_but_missing_falls_back_to_cpu_with_a_warning() -> None:
    choice = choose_providers("cuda", available=[CPU])
    assert choice.providers == [CPU] and "CUDA execution provider requested" in (choice.warning or "")


def test_cuda_present_is_used_with_cpu_behind_it() -> None:
    assert choose_providers("cuda", available=[CUDA, CPU]).providers == [CUDA, CPU]
    assert choose_providers("auto", available=[CUDA, CPU]).providers == [CUDA, CPU]


def test_cpu_and_auto_without_cuda_are_quiet() -> None:
    assert choose_providers("cpu", available=[CUDA, CPU]).providers == [CPU]
    assert choose_providers("auto", available=[CPU]).warning is None
