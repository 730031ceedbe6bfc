import numpy as np

from tfllm.models.task_model import backbone_inputs


def test_a_tensor_of_token_ids_is_all_real_tokens_of_one_document():
    token_ids = np.array([[5, 6, 0]], "int32")
    inputs = backbone_inputs(token_ids)
    assert inputs["token_ids"] is token_ids
    np.testing.assert_array_equal(inputs["padding_mask"], [[1, 1, 1]])
    assert inputs["segment_ids"] is None


def test_a_dict_keeps_its_mask_and_segments_and_fills_a_missing_mask():
    token_ids = np.array([[5, 6, 0]], "int32")
    padding_mask = np.array([[1, 1, 0]], "int32")
    segment_ids = np.array([[1, 2, 0]], "int32")
    given = backbone_inputs({"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids})
    assert given == {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids}
    filled = backbone_inputs({"token_ids": token_ids})
    np.testing.assert_array_equal(filled["padding_mask"], [[1, 1, 1]])
    assert filled["segment_ids"] is None
