"""Operations: what one CLI command does, composed from provisioners, deploy and membership."""
