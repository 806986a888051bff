"""Cloud providers behind one small interface (`base.Provider`); a new cloud is a new module."""
