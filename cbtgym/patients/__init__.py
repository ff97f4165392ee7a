"""Simulated patients: a rule-based one and an LLM-played one, sharing one state model."""

from .base import LAYERS, LEAVE_TOKEN, Patient, PatientReply, PatientState, clean_reply
from .course_memory import CourseMemory
from .cues import Cues, read_cues
from .llm_patient import LLMPatient
from .rule_patient import RulePatient

__all__ = [
    "LAYERS", "LEAVE_TOKEN", "Patient", "PatientReply", "PatientState", "clean_reply",
    "CourseMemory", "Cues", "read_cues", "LLMPatient", "RulePatient",
]
